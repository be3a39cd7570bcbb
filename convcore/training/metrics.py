"""Classification metrics from integer labels and predictions.

Conventions are scikit-learn's: confusion[i, j] counts samples of true
class i predicted as j; a class never predicted has precision 0 and one
never present recall 0 (sklearn's zero_division=0); macro averages run
over all num_classes classes. Added, as the seeds' face report defines
them: per-class BCR = (precision + recall) / 2, and the aggregate score =
mean of accuracy, macro precision, macro recall and macro BCR.

Everything is computed from one confusion matrix, so a training loop can
accumulate `confusion_matrix` batch by batch and call
`ClassificationMetrics.from_confusion` once at the end."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike

from convcore.utils.validation import check_int

# Class indices: a 1-D integer array (or a sequence of ints).
Labels = ArrayLike


def _int_labels(a: Labels, name: str, fn: str) -> np.ndarray:
    a = np.asarray(a)
    if a.size == 0:
        a = a.astype(np.int64)  # [] is float64 to NumPy; emptiness is reported later
    if a.dtype.kind not in "iu":
        # Floats are refused rather than rounded: passing scores or
        # probabilities where labels belong is the mistake to catch.
        raise TypeError(f"{fn}: {name} must hold integer class labels, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{fn}: {name} must be 1-D, got shape {a.shape}")
    if len(a) and a.min() < 0:
        raise ValueError(f"{fn}: {name} must be >= 0, found {a.min()}")
    return a.astype(np.int64, copy=False)


def _check_pair(y_true, y_pred, num_classes, fn):
    """Validated (y_true, y_pred, num_classes)."""
    y_true = _int_labels(y_true, "y_true", fn)
    y_pred = _int_labels(y_pred, "y_pred", fn)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{fn}: y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError(f"{fn}: y_true and y_pred are empty")
    top = int(max(y_true.max(), y_pred.max()))
    if num_classes is None:
        num_classes = top + 1
    else:
        num_classes = check_int(num_classes, "num_classes", 1, fn)
        if top >= num_classes:
            raise ValueError(f"{fn}: label {top} out of range for num_classes={num_classes}")
    return y_true, y_pred, num_classes


def accuracy(y_true: Labels, y_pred: Labels) -> float:
    """Fraction of positions where y_pred equals y_true."""
    y_true, y_pred, _ = _check_pair(y_true, y_pred, None, "accuracy")
    return float(np.mean(y_true == y_pred))


def top_k_accuracy(y_true: Labels, scores: np.ndarray, k: int = 5) -> float:
    """Fraction of samples whose true class is among the k highest scores.

    scores: (N, C) array (logits or probabilities). Ties are broken as
    scikit-learn's top_k_accuracy_score does (a stable sort, reversed: of
    equal scores the higher class index ranks first)."""
    fn = "top_k_accuracy"
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.dtype.kind not in "fiu":
        raise ValueError(f"{fn}: scores must be a 2-D numeric (N, C) array, got "
                         f"{scores.dtype} {scores.shape}")
    y_true = _int_labels(y_true, "y_true", fn)
    n, c = scores.shape
    if len(y_true) != n or n == 0:
        raise ValueError(f"{fn}: scores has {n} rows but y_true has {len(y_true)} labels "
                         f"(must be equal and non-zero)")
    if y_true.max() >= c:
        raise ValueError(f"{fn}: label {y_true.max()} out of range for {c} score columns")
    k = check_int(k, "k", 1, fn)
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        # argsort ranks NaN above every number, which would count as a hit.
        rows = np.flatnonzero(np.isnan(scores).any(axis=1))
        raise ValueError(f"{fn}: scores contain NaN in {len(rows)} rows "
                         f"(first: {rows[:5].tolist()})")
    ranked = np.argsort(scores, axis=1, kind="stable")[:, ::-1][:, :k]
    return float(np.mean(np.any(ranked == y_true[:, None], axis=1)))


def confusion_matrix(y_true: Labels, y_pred: Labels, num_classes: Optional[int] = None) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; row = true class, column = predicted."""
    y_true, y_pred, k = _check_pair(y_true, y_pred, num_classes, "confusion_matrix")
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.int64)


def _safe_divide(num, den):
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


@dataclass(frozen=True, eq=False)
class ClassificationMetrics:
    """Per-class and summary metrics of one confusion matrix.

    Per class (arrays of shape (C,)): precision, recall, f1, bcr, support.
    Summaries (floats): accuracy, macro_precision, macro_recall, macro_f1,
    macro_bcr, aggregate."""
    confusion: np.ndarray
    class_names: tuple
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    bcr: np.ndarray
    support: np.ndarray
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    macro_bcr: float
    aggregate: float

    @classmethod
    def from_confusion(cls, confusion: np.ndarray, class_names: Optional[Sequence[str]] = None
                       ) -> ClassificationMetrics:
        fn = "ClassificationMetrics.from_confusion"
        cm = np.asarray(confusion)
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0 or cm.dtype.kind not in "iu":
            raise ValueError(f"{fn}: confusion must be a square non-empty integer matrix, "
                             f"got {cm.dtype} {cm.shape}")
        if cm.min() < 0 or cm.sum() == 0:
            raise ValueError(f"{fn}: confusion must hold non-negative counts, not all zero")
        k = cm.shape[0]
        names = tuple(str(i) for i in range(k)) if class_names is None else tuple(map(str, class_names))
        if len(names) != k:
            raise ValueError(f"{fn}: {len(names)} class names for {k} classes")
        tp = np.diag(cm).astype(np.float64)
        support = cm.sum(axis=1)
        precision = _safe_divide(tp, cm.sum(axis=0))
        recall = _safe_divide(tp, support)
        f1 = _safe_divide(2 * precision * recall, precision + recall)
        bcr = (precision + recall) / 2
        acc = float(tp.sum() / cm.sum())
        mp, mr, mf, mb = (float(a.mean()) for a in (precision, recall, f1, bcr))
        return cls(cm.astype(np.int64), names, precision, recall, f1, bcr,
                   support.astype(np.int64), acc, mp, mr, mf, mb,
                   float(np.mean([acc, mp, mr, mb])))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def report(self, digits: int = 3, extremes: int = 3) -> str:
        """A readable table: one row per class, macro averages, accuracy,
        the aggregate score and the `extremes` best and worst classes by F1."""
        return format_report(self, digits, extremes)

    def __str__(self):
        return self.report()


def classification_metrics(y_true: Labels, y_pred: Labels, num_classes: Optional[int] = None,
                           class_names: Optional[Sequence[str]] = None) -> ClassificationMetrics:
    """ClassificationMetrics of integer labels and predictions."""
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return ClassificationMetrics.from_confusion(cm, class_names)


def precision_recall_f1(y_true: Labels, y_pred: Labels, num_classes: Optional[int] = None
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (precision, recall, f1, support), arrays of shape (C,)."""
    m = classification_metrics(y_true, y_pred, num_classes)
    return m.precision, m.recall, m.f1, m.support


def classification_report(y_true: Labels, y_pred: Labels, num_classes: Optional[int] = None,
                          class_names: Optional[Sequence[str]] = None, digits: int = 3,
                          extremes: int = 3) -> str:
    """The report string of classification_metrics(...)."""
    return classification_metrics(y_true, y_pred, num_classes, class_names).report(digits, extremes)


def format_report(m: ClassificationMetrics, digits: int = 3, extremes: int = 3) -> str:
    digits = check_int(digits, "digits", 0, "format_report")
    extremes = check_int(extremes, "extremes", 0, "format_report")
    width = max(12, max(len(n) for n in m.class_names) + 2)
    cols = ("precision", "recall", "f1", "bcr", "support")
    head = f"{'class':<{width}}" + "".join(f"{c:>11}" for c in cols)
    lines = [head, "-" * len(head)]
    f = f"{{:>11.{digits}f}}"

    def row(name, p, r, f1, b, s):
        return f"{name:<{width}}" + "".join(f.format(v) for v in (p, r, f1, b)) + f"{s:>11d}"

    for i, name in enumerate(m.class_names):
        lines.append(row(name, m.precision[i], m.recall[i], m.f1[i], m.bcr[i], int(m.support[i])))
    lines.append("-" * len(head))
    lines.append(row("macro avg", m.macro_precision, m.macro_recall, m.macro_f1, m.macro_bcr,
                     int(m.support.sum())))
    lines.append(f"accuracy {m.accuracy:.{digits}f}   aggregate {m.aggregate:.{digits}f} "
                 f"(mean of accuracy, macro precision, recall and BCR)")
    if extremes and m.num_classes > 1:
        n = min(extremes, m.num_classes // 2) or 1
        # Stable sort on -f1 keeps class order among ties, so the report is reproducible.
        order = np.argsort(-m.f1, kind="stable")

        def names(idx):
            return ", ".join(f"{m.class_names[i]} ({m.f1[i]:.{digits}f})" for i in idx)
        lines.append(f"best by F1:  {names(order[:n])}")
        lines.append(f"worst by F1: {names(order[::-1][:n])}")
    return "\n".join(lines)


__all__ = ["accuracy", "top_k_accuracy", "confusion_matrix", "precision_recall_f1",
           "classification_metrics", "classification_report", "ClassificationMetrics"]
