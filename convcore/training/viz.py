"""Plots saved as PNG: training curves, a confusion matrix, first-layer kernels.

matplotlib is optional (`pip install convcore[plot]`); without it every
function raises ImportError saying how to install it. Figures are built
with matplotlib.figure.Figure and the Agg canvas directly, never pyplot,
so nothing depends on a display or touches pyplot's global state."""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from convcore.utils.types import PathLike


def _figure(figsize):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("convcore.training.viz needs matplotlib: pip install 'convcore[plot]' "
                          "(or pip install matplotlib)") from e
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_history(history: Mapping[str, Sequence[Any]], path: PathLike, title: str = "training"
                 ) -> str:
    """Loss and accuracy curves per epoch.

    history: mapping of series name -> list of per-epoch values, e.g.
    {"train_loss": [...], "val_loss": [...], "train_acc": [...], "val_acc": [...]}.
    Names containing "loss" go to the left panel, "acc" to the right, any
    other numeric series to the loss panel's twin (so lr schedules show).
    Returns the path written."""
    if not hasattr(history, "items") or not history:
        raise ValueError("plot_history: history must be a non-empty mapping of name -> values")
    series = {}
    for name, values in history.items():
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.size:
            series[str(name)] = v
    if not series:
        raise ValueError("plot_history: every series in history is empty")
    losses = {k: v for k, v in series.items() if "loss" in k.lower()}
    accs = {k: v for k, v in series.items() if "acc" in k.lower() and k not in losses}
    other = {k: v for k, v in series.items() if k not in losses and k not in accs}
    fig = _figure((10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for k, v in losses.items():
        ax_loss.plot(np.arange(1, len(v) + 1), v, marker="o", label=k)
    if other:
        twin = ax_loss.twinx()
        for k, v in other.items():
            twin.plot(np.arange(1, len(v) + 1), v, linestyle="--", color="grey", label=k)
        twin.legend(loc="center right")
    for k, v in accs.items():
        ax_acc.plot(np.arange(1, len(v) + 1), v, marker="o", label=k)
    from matplotlib.ticker import MaxNLocator
    for ax, label in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def plot_confusion_matrix(confusion: np.ndarray, path: PathLike,
                          class_names: Optional[Sequence[str]] = None, normalize: bool = True,
                          title: str = "confusion matrix") -> str:
    """Heat map of a confusion matrix (rows true, columns predicted); with
    normalize each row is divided by its support, cells print counts."""
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.dtype.kind not in "iu":
        raise ValueError(f"plot_confusion_matrix: confusion must be a square integer matrix, "
                         f"got {cm.dtype} {cm.shape}")
    k = cm.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise ValueError(f"plot_confusion_matrix: {len(names)} class names for {k} classes")
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = min(4 + 0.45 * k, 20)
    fig = _figure((size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks(range(k), names, rotation=90 if k > 10 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 30:  # counts become unreadable beyond that
        limit = shown.max() / 2 if shown.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if shown[i, j] > limit else "black")
    return _save(fig, path)


def plot_kernels(weight: np.ndarray, path: PathLike, max_kernels: int = 64,
                 title: str = "first-layer kernels") -> str:
    """A grid of convolution kernels (out_channels, in_channels, kH, kW):
    RGB when in_channels == 3, else the channel mean in grey; each kernel
    scaled to its own min..max."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"plot_kernels: weight must be 4-D (out, in, kH, kW), got shape {w.shape}")
    w = w[:max_kernels]
    n = len(w)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = _figure((1.2 * cols + 0.5, 1.2 * rows + 0.5))
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        k = w[i]
        lo, hi = k.min(), k.max()
        k = (k - lo) / (hi - lo) if hi > lo else np.zeros_like(k)
        if k.shape[0] == 3:
            ax.imshow(np.moveaxis(k, 0, -1), interpolation="nearest")
        else:
            ax.imshow(k.mean(axis=0), cmap="gray", interpolation="nearest", vmin=0, vmax=1)
    fig.suptitle(title)
    return _save(fig, path)


__all__ = ["plot_history", "plot_confusion_matrix", "plot_kernels"]
