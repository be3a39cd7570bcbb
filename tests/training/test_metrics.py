"""convcore.training.metrics against hand-computed values and scikit-learn."""
import numpy as np
import pytest

from convcore.training.metrics import (ClassificationMetrics, accuracy, classification_metrics,
                              classification_report, confusion_matrix, precision_recall_f1,
                              top_k_accuracy)

# 3 classes, 10 samples. Confusion (rows true, cols predicted):
#        p0 p1 p2
#   t0 [  3  1  0 ]   support 4
#   t1 [  1  2  0 ]   support 3
#   t2 [  0  1  2 ]   support 3
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 0, 1, 0, 1, 1, 1, 2, 2])
CM = np.array([[3, 1, 0], [1, 2, 0], [0, 1, 2]])
PRECISION = np.array([3 / 4, 2 / 4, 2 / 2])
RECALL = np.array([3 / 4, 2 / 3, 2 / 3])


def test_hand_computed_values():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.7)
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED), CM)
    m = classification_metrics(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(m.precision, PRECISION)
    np.testing.assert_allclose(m.recall, RECALL)
    f1 = 2 * PRECISION * RECALL / (PRECISION + RECALL)      # 0.75, 4/7, 0.8
    np.testing.assert_allclose(m.f1, [0.75, 4 / 7, 0.8])
    np.testing.assert_allclose(m.f1, f1)
    np.testing.assert_allclose(m.bcr, (PRECISION + RECALL) / 2)
    np.testing.assert_array_equal(m.support, [4, 3, 3])
    assert m.macro_precision == pytest.approx(2.25 / 3)
    assert m.macro_recall == pytest.approx((3 / 4 + 4 / 3) / 3)
    assert m.macro_f1 == pytest.approx((0.75 + 4 / 7 + 0.8) / 3)
    assert m.macro_bcr == pytest.approx((m.macro_precision + m.macro_recall) / 2)
    assert m.aggregate == pytest.approx((0.7 + m.macro_precision + m.macro_recall + m.macro_bcr) / 4)
    p, r, f, s = precision_recall_f1(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(p, PRECISION)
    np.testing.assert_array_equal(s, [4, 3, 3])


def test_from_confusion_equals_from_labels():
    a = ClassificationMetrics.from_confusion(CM, ["a", "b", "c"])
    b = classification_metrics(Y_TRUE, Y_PRED, class_names=["a", "b", "c"])
    np.testing.assert_array_equal(a.f1, b.f1)
    assert a.aggregate == b.aggregate and a.class_names == ("a", "b", "c")


def test_zero_division_and_absent_classes():
    # Class 2 never predicted (precision 0), class 3 absent everywhere.
    m = classification_metrics([0, 1, 2, 2], [0, 1, 1, 0], num_classes=4)
    np.testing.assert_allclose(m.precision, [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(m.recall, [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(m.f1, [2 / 3, 2 / 3, 0.0, 0.0])
    np.testing.assert_array_equal(m.confusion.shape, (4, 4))
    assert m.macro_recall == pytest.approx(0.5)


def test_top_k_accuracy():
    scores = np.array([[0.1, 0.5, 0.4],    # true 2: rank 2
                       [0.7, 0.2, 0.1],    # true 0: rank 1
                       [0.2, 0.3, 0.5]])   # true 0: rank 3
    y = np.array([2, 0, 0])
    assert top_k_accuracy(y, scores, k=1) == pytest.approx(1 / 3)
    assert top_k_accuracy(y, scores, k=2) == pytest.approx(2 / 3)
    assert top_k_accuracy(y, scores, k=3) == 1.0
    assert top_k_accuracy(y, scores, k=5) == 1.0
    assert top_k_accuracy(y, scores, k=1) == accuracy(y, scores.argmax(1))


def test_against_sklearn(rng):
    skm = pytest.importorskip("sklearn.metrics")
    y = rng.integers(0, 6, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 6, 300))
    p[p == 5] = 4                                  # class 5 never predicted
    m = classification_metrics(y, p, num_classes=7)  # class 6 absent
    labels = np.arange(7)
    np.testing.assert_array_equal(m.confusion, skm.confusion_matrix(y, p, labels=labels))
    sp, sr, sf, ss = skm.precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    np.testing.assert_allclose(m.precision, sp)
    np.testing.assert_allclose(m.recall, sr)
    np.testing.assert_allclose(m.f1, sf)
    np.testing.assert_array_equal(m.support, ss)
    mp, mr, mf, _ = skm.precision_recall_fscore_support(y, p, labels=labels, average="macro",
                                                        zero_division=0)
    assert (m.macro_precision, m.macro_recall, m.macro_f1) == pytest.approx((mp, mr, mf))
    assert m.accuracy == pytest.approx(skm.accuracy_score(y, p))
    scores = rng.standard_normal((300, 6))
    scores[:10, :] = 0.0                           # ties, broken as sklearn does
    for k in (1, 2, 4):
        assert top_k_accuracy(y, scores, k) == pytest.approx(
            skm.top_k_accuracy_score(y, scores, k=k, labels=np.arange(6)))


def test_report_string():
    text = classification_report(Y_TRUE, Y_PRED, class_names=["cat", "dog", "bird"], extremes=1)
    lines = text.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "bcr", "support"]
    assert lines[2].split() == ["cat", "0.750", "0.750", "0.750", "0.750", "4"]
    assert lines[4].split()[0] == "bird" and lines[4].split()[-1] == "3"
    assert "macro avg" in text and "accuracy 0.700" in text
    assert "best by F1:  bird (0.800)" in text and "worst by F1: dog (0.571)" in text
    assert str(classification_metrics(Y_TRUE, Y_PRED)).startswith("class")


@pytest.mark.parametrize("call,exc,fragment", [
    (lambda: accuracy([0, 1], [0]), ValueError, "2 labels but y_pred has 1"),
    (lambda: accuracy([], []), ValueError, "empty"),
    (lambda: accuracy([0.5, 1.0], [0, 1]), TypeError, "integer class labels"),
    (lambda: accuracy([[0, 1]], [[0, 1]]), ValueError, "must be 1-D"),
    (lambda: accuracy([0, -1], [0, 1]), ValueError, ">= 0"),
    (lambda: confusion_matrix([0, 3], [0, 1], num_classes=3), ValueError, "out of range"),
    (lambda: confusion_matrix([0, 1], [0, 1], num_classes=0), ValueError, "num_classes"),
    (lambda: top_k_accuracy([0, 1], np.zeros(2), 1), ValueError, "2-D"),
    (lambda: top_k_accuracy([0, 3], np.zeros((2, 3)), 1), ValueError, "out of range"),
    (lambda: top_k_accuracy([0, 1], np.zeros((2, 3)), 0), ValueError, "k must be >= 1"),
    (lambda: top_k_accuracy([0], np.zeros((2, 3)), 1), ValueError, "2 rows"),
    (lambda: top_k_accuracy([0, 1], np.array([[0, 1.0], [np.nan, 0]]), 1), ValueError, "NaN"),
    (lambda: ClassificationMetrics.from_confusion(np.zeros((2, 3), int)), ValueError, "square"),
    (lambda: ClassificationMetrics.from_confusion(np.zeros((2, 2), int)), ValueError, "not all zero"),
    (lambda: classification_metrics([0, 1], [0, 1], class_names=["a"]), ValueError, "out of range"),
])
def test_bad_arguments(call, exc, fragment):
    with pytest.raises(exc, match=fragment):
        call()


def test_inputs_unchanged():
    yt, yp = Y_TRUE.copy(), Y_PRED.copy()
    classification_report(yt, yp)
    np.testing.assert_array_equal(yt, Y_TRUE)
    np.testing.assert_array_equal(yp, Y_PRED)
