"""Callbacks: hooks fit() calls at the start and end of training, of each
epoch and of each batch, with the TrainState they may read and change
(`state.stop = True` ends training after this epoch). Their state_dict()
goes into fit()'s checkpoint so that a resumed run continues them."""
from __future__ import annotations

from typing import Any, Callable, Dict, List

from convcore._runtime import mpi as _mpi
from convcore.utils.types import PathLike
from convcore.utils.validation import check_int

__all__ = ["Callback", "LambdaCallback", "EarlyStopping", "ModelCheckpoint"]


class Callback:
    """Hooks called by fit(); override any. `logs` is the epoch's history row."""

    def on_train_begin(self, state: Any) -> None:
        pass

    def on_epoch_begin(self, state: Any) -> None:
        pass

    def on_batch_end(self, state: Any, batch: int, logs: Dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, state: Any, logs: Dict[str, Any]) -> None:
        pass

    def on_train_end(self, state: Any) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        """JSON-able state stored in fit()'s checkpoint, restored on resume."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. LambdaCallback(on_epoch_end=f)."""

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        for name, f in hooks.items():
            if not hasattr(Callback, name) or not name.startswith("on_"):
                raise ValueError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, f)


def _monitor_mode(monitor, mode, fn):
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"{fn}: mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


class EarlyStopping(Callback):
    """Stop when `monitor` (a history key: "val_loss", "val_acc",
    "train_loss", ...) has not improved by more than `min_delta` for
    `patience` epochs; with restore_best_weights a stopped run ends with the
    weights of its best epoch (a run that uses all its epochs keeps the
    last ones, as Keras does)."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True) -> None:
        fn = "EarlyStopping"
        self.monitor = monitor
        self.patience = check_int(patience, "patience", 0, fn)
        self.min_delta = abs(float(min_delta))
        self.mode = _monitor_mode(monitor, mode, fn)
        self.restore_best_weights = bool(restore_best_weights)
        self.best = None
        self.best_epoch = None
        self.wait = 0
        self._best_weights = None

    def _improved(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, state, logs):
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: monitor {self.monitor!r} is not in the "
                           f"epoch's results {sorted(logs)} (val_* needs validation data)")
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, state.epoch, 0
            if self.restore_best_weights:
                self._best_weights = state.model.state_dict()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                state.stop = True
                state.history.stopped_early = True
        state.history.best_epoch = self.best_epoch

    def on_train_end(self, state):
        if state.stop and self.restore_best_weights and self._best_weights is not None:
            state.model.load_state_dict(self._best_weights)

    def state_dict(self):
        # best weights are not stored: a resumed run restores from the best
        # epoch seen after resuming (documented limitation)
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state):
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]


class ModelCheckpoint(Callback):
    """Save the model's state_dict (convcore.save) after each epoch to
    `path` (str.format'ed with epoch=, e.g. "ckpt-{epoch:02d}.npz"), or
    only when `monitor` improves with save_best_only. On several ranks
    only rank 0 writes (the weights are the same on every rank)."""

    def __init__(self, path: PathLike, monitor: str = "val_loss", mode: str = "auto",
                 save_best_only: bool = False) -> None:
        self.path, self.monitor = path, monitor
        self.mode = _monitor_mode(monitor, mode, "ModelCheckpoint")
        self.save_best_only = bool(save_best_only)
        self.best = None
        self.saved: List[str] = []

    def on_epoch_end(self, state, logs):
        from convcore.serialization import save
        if self.save_best_only:
            value = float(logs[self.monitor])
            better = self.best is None or (value < self.best if self.mode == "min"
                                           else value > self.best)
            if not better:
                return
            self.best = value
        path = str(self.path).format(epoch=state.epoch + 1)
        if _mpi.rank() == 0:
            save(state.model, path)
        self.saved.append(path)
