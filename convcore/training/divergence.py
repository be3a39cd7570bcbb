"""Why the training loss stopped being finite: bad data or a diverging run.

A NaN or inf in an input batch makes the loss NaN at once, whatever the
learning rate; telling the user to lower it sends them the wrong way. So
when the loss is not finite, the batch is examined before blaming the
optimisation: non-finite inputs or targets are reported with the batch,
the samples within it and (for a DataLoader) their rows in the data set.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["non_finite_loss_error"]

# How many offending samples a message lists before "...".
_SHOWN = 5


def _bad_samples(batch: Any) -> Optional[np.ndarray]:
    """Indices along axis 0 of the samples holding NaN or inf; None when
    the batch is not a float array (class indices cannot be non-finite)."""
    arr = np.asarray(batch)
    if arr.dtype.kind not in "fc" or arr.ndim == 0:
        return None
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    return np.flatnonzero(bad)


def _listing(indices: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:_SHOWN])
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > _SHOWN else "")


def _dataset_rows(loader: Any, epoch: Optional[int], batch_index: int, samples: np.ndarray
                  ) -> Optional[np.ndarray]:
    """Rows of the data set behind `samples` of batch `batch_index`, when
    the loader can say (convcore's DataLoader: its order for `epoch`)."""
    order = getattr(loader, "order", None)
    size = getattr(loader, "batch_size", None)
    if not callable(order) or not isinstance(size, int) or not isinstance(epoch, int):
        return None
    try:
        rows = np.asarray(order(epoch))[batch_index * size + samples]
    except (IndexError, TypeError, ValueError):
        return None
    return rows


def non_finite_loss_error(value: float, batch_index: int, x: Any, y: Any, lr: float,
                          loader: Any = None, epoch: Optional[int] = None) -> FloatingPointError:
    """The FloatingPointError to raise when the loss of batch `batch_index`
    is `value` (NaN or inf): names non-finite input (or target) samples if
    there are any, else reports a diverging loss with the learning rate.
    `loader` and `epoch` (the loader's epoch when iteration began; a
    DataLoader counts up as it starts) locate the samples in the data set."""
    for what, batch in (("input", x), ("target", y)):
        bad = _bad_samples(batch)
        if bad is None or not len(bad):
            continue
        rows = _dataset_rows(loader, epoch, batch_index, bad)
        where = "" if rows is None else f" (data set rows {_listing(rows)})"
        return FloatingPointError(
            f"fit: the {what} data holds NaN or inf values in batch {batch_index}, "
            f"samples {_listing(bad)}{where}; the loss became {value}. Clean or "
            f"filter the data (np.isfinite), this is not a learning-rate problem")
    return FloatingPointError(
        f"fit: the loss became {value} at batch {batch_index} with finite input data: "
        f"training diverged; lower the learning rate (lr={lr}) or clip gradients")
