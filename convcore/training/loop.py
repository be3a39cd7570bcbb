"""The training loop (floor 4): fit(), evaluate(), cross-validation.

    fit(model, loss, optimizer, train, val, epochs, scheduler, callbacks)
      per epoch:  train.set_epoch(e)        (seeded shuffle/augmentation)
                  per batch: out = model(x); l = loss(out, y)
                             optimizer.zero_grad(); model.backward(loss.backward())
                             [clip_grad_norm_]; optimizer.step()
                  evaluate(model, val)      (eval mode, no_grad)
                  scheduler.step()          (ReduceLROnPlateau: with the monitored metric)
                  callbacks.on_epoch_end    (EarlyStopping, ModelCheckpoint, ...)
                  checkpoint file           (convcore.training.checkpoint, exact resume)
      -> History: per-epoch lists (train_loss, train_acc, val_loss, val_acc,
         lr, seconds, images_per_s)

Progress is a tqdm bar per epoch showing loss, accuracy and images/s on a
terminal, one plain line per epoch when stderr is a file or a pipe
(convcore/training/progress.py).

On several ranks (started by mpiexec; see convcore.distributed) fit trains
data-parallel by itself: the model wrapped in DistributedDataParallel, each
rank a shard of the training data, metrics summed over the ranks, files
and output from rank 0 (convcore/distributed/training.py says how).
Everything is deterministic given the loaders' seeds and the model's
initial weights, so an interrupted run resumed from its checkpoint ends
with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from convcore._runtime import logs as _logs
from convcore._runtime import mpi as _mpi
from convcore._runtime.grad_mode import no_grad
from convcore.data import ArrayDataset, DataLoader, multi_crop, stratified_kfold
from convcore.distributed import training as dist_training
from convcore.optim import clip_grad_norm_
from convcore.optim.lr_scheduler import ReduceLROnPlateau
from convcore.training.checkpoint import load_checkpoint, save_checkpoint
from convcore.training.divergence import non_finite_loss_error
from convcore.training.progress import epoch_progress
from convcore.training.schedule_resume import keep_schedule_length, schedule_length
from convcore.training.metrics import ClassificationMetrics, confusion_matrix
from convcore.nn.module import Module
from convcore.optim.optimizer import Optimizer
from convcore.training.callbacks import Callback
from convcore.utils.types import PathLike
from convcore.utils.validation import check_int



class Loss(Protocol):
    """What fit() needs of a loss: loss(output, target) -> a float (it
    keeps what backward needs), then loss.backward() -> grad of the output
    (convcore.nn's CrossEntropyLoss, MSELoss, ... or your own)."""

    def __call__(self, output: np.ndarray, target: Any) -> Any: ...

    def backward(self) -> np.ndarray: ...


# What fit(), evaluate() and predict() take as data: a DataLoader, an
# ArrayDataset, an (images, labels) pair, or any re-iterable of batches.
Data = Union[DataLoader, ArrayDataset, Tuple[np.ndarray, np.ndarray],
             Iterable[Tuple[np.ndarray, np.ndarray]]]

__all__ = ["fit", "train_epoch", "evaluate", "predict", "History", "EvalResult", "TrainState",
           "cross_validate", "evaluate_multi_crop", "HISTORY_KEYS"]

logger = logging.getLogger(__name__)

HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                "images_per_s")


class History(dict):
    """Per-epoch lists keyed by HISTORY_KEYS ("val_*" only with validation
    data), plus `stopped_early` and `best_epoch` set by EarlyStopping."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopped_early = False
        self.best_epoch: Optional[int] = None

    def append(self, row: Dict[str, Any]) -> None:
        for k, v in row.items():
            self.setdefault(k, []).append(v)

    def curves(self) -> Dict[str, List[Any]]:
        """The loss/accuracy/lr series only, for convcore.training.viz.plot_history."""
        return {k: v for k, v in self.items()
                if k in ("train_loss", "val_loss", "train_acc", "val_acc", "lr")}

    def last(self, key: str, default: Any = None) -> Any:
        values = self.get(key)
        return values[-1] if values else default


@dataclass
class EvalResult:
    """evaluate()'s result: mean loss (None without a loss), accuracy, the
    per-class ClassificationMetrics, labels and predictions, speed."""
    loss: Optional[float]
    accuracy: float
    metrics: ClassificationMetrics
    y_true: np.ndarray
    y_pred: np.ndarray
    seconds: float
    images_per_s: float

    def report(self, digits: int = 3, extremes: int = 3) -> str:
        return self.metrics.report(digits, extremes)


@dataclass
class TrainState:
    """What callbacks see (and may change: set `stop = True` to end training
    after this epoch)."""
    model: object
    optimizer: object
    scheduler: object = None
    history: History = field(default_factory=History)
    epoch: int = 0          # the epoch running / just finished, from 0
    epochs: int = 0
    stop: bool = False


# -- data -------------------------------------------------------------------
def _as_loader(data, batch_size, fn, what):
    """A DataLoader (or any re-iterable of (x, y) batches) from what the user passed."""
    if isinstance(data, ArrayDataset) or (isinstance(data, (tuple, list)) and len(data) == 2
                                          and isinstance(data[0], np.ndarray)):
        return DataLoader(data, batch_size=batch_size)
    if hasattr(data, "__iter__"):
        return data
    raise TypeError(f"{fn}: {what} must be a DataLoader, an ArrayDataset or an "
                    f"(images, labels) pair, got {type(data).__name__}")


def _model_dtype(model):
    params = model.parameters()
    return params[0].dtype if params else None


def _num_classes(data):
    for obj in (data, getattr(data, "dataset", None)):
        if isinstance(obj, ArrayDataset):
            return obj.num_classes, obj.classes
    return None, None


# -- evaluation ---------------------------------------------------------------
def predict(model: Module, data: Data, batch_size: int = 256) -> Tuple[np.ndarray, np.ndarray]:
    """(scores (N, num_classes), labels (N,)) of the model in eval mode
    under no_grad(); the model's train/eval mode is restored afterwards."""
    loader = _as_loader(data, batch_size, "predict", "data")
    dt = _model_dtype(model)
    was_training = model.training
    model.eval()
    scores, labels = [], []
    try:
        with no_grad():
            for x, y in loader:
                if dt is not None and x.dtype != dt:
                    x = x.astype(dt)
                scores.append(model(x))
                labels.append(np.asarray(y))
    finally:
        model.train(was_training)
    if not scores:
        raise ValueError("predict: the data yielded no batches")
    return np.concatenate(scores), np.concatenate(labels).astype(np.int64)


def evaluate(model: Module, data: Data, loss: Optional[Loss] = None, *,
             num_classes: Optional[int] = None, class_names: Optional[Sequence[str]] = None,
             batch_size: int = 256) -> EvalResult:
    """Loss (mean over samples, when `loss` is given), accuracy and per-class
    metrics (convcore.training.metrics) of `model` on `data` -> EvalResult."""
    t0 = time.perf_counter()
    scores, y_true = predict(model, data, batch_size)
    seconds = time.perf_counter() - t0
    value = None
    if loss is not None:
        with no_grad():
            value = float(loss(scores, y_true))
    if num_classes is None:
        num_classes, names = _num_classes(data)
        class_names = class_names or names
        num_classes = num_classes or scores.shape[1]
    y_pred = scores.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    metrics = ClassificationMetrics.from_confusion(cm, class_names)
    return EvalResult(value, metrics.accuracy, metrics, y_true, y_pred, seconds,
                      len(y_true) / max(seconds, 1e-9))


def evaluate_multi_crop(model: Module, dataset: Union[ArrayDataset, Tuple[np.ndarray, np.ndarray]],
                        size: Union[int, Tuple[int, int]], flips: bool = True, *,
                        batch_size: int = 256) -> Tuple[float, np.ndarray]:
    """Accuracy with the 5 (or 10 with flips) crop evaluation: the mean of
    the softmax scores over the four corner crops, the centre crop (and
    their mirror images) of each image. Returns (accuracy, mean scores)."""
    from convcore.functional import softmax
    images, labels = (dataset.images, dataset.labels) if isinstance(dataset, ArrayDataset) \
        else dataset
    views = multi_crop(images, size, flips)

    def probabilities(view: np.ndarray) -> np.ndarray:
        scores, _ = predict(model, (view, labels), batch_size)
        return softmax(scores.astype(np.float64), axis=1)

    total = probabilities(views[0])
    for view in views[1:]:
        total = total + probabilities(view)
    mean = total / len(views)
    return float(np.mean(mean.argmax(axis=1) == np.asarray(labels))), mean


# -- training ---------------------------------------------------------------
def _progress(loader, epoch, epochs, enabled):
    if not enabled:
        return None
    return epoch_progress(len(loader) if hasattr(loader, "__len__") else None, epoch, epochs)


def _scheduler_step(scheduler, row):
    if scheduler is None:
        return
    if isinstance(scheduler, ReduceLROnPlateau):
        key = ("val_acc" if "val_acc" in row else "train_acc") if scheduler.mode == "max" \
            else ("val_loss" if "val_loss" in row else "train_loss")
        scheduler.step(row[key])
    else:
        scheduler.step()


def train_epoch(model: Module, loss: Loss, optimizer: Optimizer,
                loader: Iterable[Tuple[np.ndarray, np.ndarray]], *,
                clip_grad_norm: Optional[float] = None, bar: Any = None,
                on_batch_end: Optional[Callable[[int, Dict[str, Any]], Any]] = None
                ) -> Tuple[float, Optional[float], int, float]:
    """One pass over `loader` in train mode -> (mean loss, accuracy (None
    unless targets are class indices for (N, C) outputs), samples, seconds).
    Raises FloatingPointError naming the batch if the loss stops being
    finite: the samples when the input (or target) data holds NaN or inf,
    else a diverging run (a learning rate too high, usually). On several ranks the loss,
    accuracy and samples are the whole job's."""
    model.train()
    dt = _model_dtype(model)
    params = model.parameters()
    total_loss, correct, seen = 0.0, 0, 0
    classifying = None
    t0 = time.perf_counter()
    epoch = getattr(loader, "epoch", None)  # before iterating moves it on
    for b, (x, y) in enumerate(loader):
        if dt is not None and x.dtype != dt:
            x = x.astype(dt)
        out = model(x)
        value = float(loss(out, y))
        if not math.isfinite(value):
            raise non_finite_loss_error(value, b, x, y, optimizer.param_groups[0]["lr"],
                                        loader, epoch)
        optimizer.zero_grad()
        model.backward(loss.backward())
        if clip_grad_norm is not None:
            clip_grad_norm_(params, clip_grad_norm)
        optimizer.step()
        n = len(y)
        total_loss += value * n
        if classifying is None:  # class indices vs (N, C) scores: accuracy makes sense
            y_arr = np.asarray(y)
            classifying = out.ndim == 2 and y_arr.ndim == 1 and y_arr.dtype.kind in "iu"
        if classifying:
            correct += int(np.sum(out.argmax(axis=1) == y))
        seen += n
        if bar is not None:
            elapsed = time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}",
                            acc=f"{correct / seen:.3f}" if classifying else "-",
                            img_s=f"{seen / max(elapsed, 1e-9):.0f}", refresh=False)
        if on_batch_end is not None:
            on_batch_end(b, {"loss": value, "batch_size": n})
    if _mpi.active():
        total_loss, correct, seen = dist_training.reduce_epoch(total_loss, correct, seen)
    if seen == 0:
        raise ValueError("fit: the training data yielded no batches")
    accuracy = correct / seen if classifying else None
    return total_loss / seen, accuracy, seen, time.perf_counter() - t0


def fit(model: Module, loss: Loss, optimizer: Optimizer, train: Data, val: Optional[Data] = None,
        epochs: int = 10, scheduler: Any = None, callbacks: Iterable[Callback] = (), *,
        checkpoint: Optional[PathLike] = None, resume: Optional[PathLike] = None,
        clip_grad_norm: Optional[float] = None, progress: bool = True, verbose: bool = False,
        batch_size: int = 64, distributed: Optional[bool] = None) -> History:
    """Train `model` for `epochs` epochs (the total, counting resumed ones).

    loss : a convcore.nn loss module (CrossEntropyLoss, ...)
    train, val : DataLoader (shuffle/seed/augmentation are its business), an
        ArrayDataset or an (images, labels) pair (batched by `batch_size`,
        in order)
    scheduler : an lr scheduler stepped once per epoch; ReduceLROnPlateau
        gets val_loss (val_acc when mode="max"; train_* without val)
    callbacks : Callback instances (EarlyStopping, ModelCheckpoint, ...)
    checkpoint : path of a checkpoint written after every epoch (model,
        optimizer, scheduler, history, dropout RNG and callback states)
    resume : path of such a checkpoint to continue from (epochs already
        done are skipped); a missing file is an error. A cosine schedule
        keeps the length it was given here, not the checkpoint's (logged
        when they differ; convcore/training/schedule_resume.py)
    clip_grad_norm : max global gradient norm, or None
    progress : show a tqdm bar per epoch; verbose: log one line per epoch
        (logger "convcore.training.loop", INFO; shown on stdout unless the
        application configured logging, which then decides)
    distributed : None (default): data-parallel when started on several
        ranks by mpiexec (or after convcore.distributed.init()); False:
        this process alone; True: join MPI (world size 1 without it).
        Checkpoints from any world size resume on any other.

    Returns the History (also in state.history for callbacks).
    """
    fn = "fit"
    epochs = check_int(epochs, "epochs", 0, fn)
    train = _as_loader(train, batch_size, fn, "train")
    if val is not None:
        val = _as_loader(val, 256, fn, "val")
    if dist_training.world_for_fit(distributed) == 1:
        return _fit(model, model, loss, optimizer, train, val, epochs, scheduler, callbacks,
                    checkpoint, resume, clip_grad_norm, progress, verbose, False)
    train = dist_training.shard_loader(train, fn)
    if val is not None and not isinstance(val, DataLoader):
        raise TypeError(f"{fn}: on several ranks the validation data must be a DataLoader "
                        f"or arrays, got {type(val).__name__}")
    stepped, made = dist_training.wrap_model(model)
    try:
        return _fit(model, stepped, loss, optimizer, train, val, epochs, scheduler, callbacks,
                    checkpoint, resume, clip_grad_norm, progress and _mpi.rank() == 0,
                    verbose and _mpi.rank() == 0, True)
    except BaseException as exc:
        _mpi.fail_job(exc, " in fit()")
    finally:
        if made:
            stepped.close()


def _fit(model, stepped, loss, optimizer, train, val, epochs, scheduler, callbacks,
         checkpoint, resume, clip_grad_norm, progress, verbose, distributed):
    """fit() once the data and the model to step (DDP-wrapped on several
    ranks) are settled."""
    callbacks = list(callbacks or ())
    state = TrainState(model, optimizer, scheduler, History(), 0, epochs)
    start = 0
    if resume is not None:
        length = schedule_length(scheduler)  # the caller's, before the checkpoint's replaces it
        meta = load_checkpoint(resume, model, optimizer, scheduler)
        start = meta["epoch"]
        keep_schedule_length(scheduler, length, epochs)
        state.history.update(meta["history"])
        for i, cb in enumerate(callbacks):
            cb.load_state_dict(meta["extra"].get("callbacks", {}).get(str(i), {}))
    for cb in callbacks:
        cb.on_train_begin(state)
    for epoch in range(start, epochs):
        state.epoch = epoch
        if hasattr(train, "set_epoch"):
            train.set_epoch(epoch)
        for cb in callbacks:
            cb.on_epoch_begin(state)
        lr = optimizer.param_groups[0]["lr"]
        bar = _progress(train, epoch, epochs, progress)
        try:
            tl, ta, seen, secs = train_epoch(
                stepped, loss, optimizer, train, clip_grad_norm=clip_grad_norm, bar=bar,
                on_batch_end=(lambda b, logs: [cb.on_batch_end(state, b, logs)
                                               for cb in callbacks]) if callbacks else None)
            row = {"epoch": epoch + 1, "train_loss": tl, "train_acc": ta}
            if val is not None and distributed:
                vl, va = dist_training.evaluate_sharded(model, val, loss, evaluate)
                row.update(val_loss=vl, val_acc=va)
            elif val is not None:
                res = evaluate(model, val, loss)
                row.update(val_loss=res.loss, val_acc=res.accuracy)
            row.update(lr=lr, seconds=secs, images_per_s=seen / max(secs, 1e-9))
            if bar is not None:
                post = {"loss": f"{tl:.4f}", "acc": "-" if ta is None else f"{ta:.3f}",
                        "img_s": f"{row['images_per_s']:.0f}"}
                if val is not None:
                    post.update(val_loss=f"{row['val_loss']:.4f}", val_acc=f"{row['val_acc']:.3f}")
                bar.set_postfix(post)
        finally:
            if bar is not None:
                bar.close()
        state.history.append(row)
        if verbose:
            with _logs.console():
                logger.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in row.items()))
        _scheduler_step(scheduler, row)
        for cb in callbacks:
            cb.on_epoch_end(state, row)
        if checkpoint is not None and _mpi.rank() == 0:
            save_checkpoint(checkpoint, model, optimizer, scheduler, epoch=epoch + 1,
                            history=state.history,
                            extra={"callbacks": {str(i): cb.state_dict()
                                                 for i, cb in enumerate(callbacks)}})
        if distributed:
            _mpi.barrier()  # the checkpoint is complete before any rank goes on
            state.stop = dist_training.agree(state.stop)
        if state.stop:
            break
    for cb in callbacks:
        cb.on_train_end(state)
    return state.history


def cross_validate(build: Callable[[int], Module], loss: Loss,
                   make_optimizer: Callable[[Module], Optimizer], dataset: ArrayDataset,
                   k: int = 5, epochs: int = 5, batch_size: int = 64, seed: int = 0,
                   transform: Optional[Callable[..., np.ndarray]] = None, progress: bool = False
                   ) -> Tuple[List[EvalResult], float, float]:
    """Stratified k-fold cross-validation: for each fold a fresh model from
    build(fold) and optimizer from make_optimizer(model) are trained on the
    other folds and evaluated on this one. Returns (list of EvalResult,
    mean accuracy, std of accuracy)."""
    folds = stratified_kfold(dataset.labels, k, seed)
    results = []
    for i, (tr, va) in enumerate(folds):
        model = build(i)
        opt = make_optimizer(model)
        loader = DataLoader(dataset.subset(tr), batch_size, shuffle=True, seed=seed + i,
                            transform=transform)
        fit(model, loss, opt, loader, epochs=epochs, progress=progress)
        results.append(evaluate(model, dataset.subset(va), loss))
    acc = np.array([r.accuracy for r in results])
    return results, float(acc.mean()), float(acc.std())
