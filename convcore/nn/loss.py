"""Losses as modules: `loss(out, target)` returns the loss (a float for
reduction "mean"/"sum") and keeps the inputs; `loss.backward()` returns the
gradient with respect to `out`, to feed into model.backward()."""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import numpy as np
from numpy.typing import ArrayLike

from convcore.functional.losses import (
    binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_backward, cross_entropy,
    cross_entropy_backward, huber_loss, huber_loss_backward, l1_loss, l1_loss_backward,
    mse_loss, mse_loss_backward, nll_loss, nll_loss_backward, smooth_l1_loss,
    smooth_l1_loss_backward)
from convcore.nn.module import Module
from convcore.utils.types import Array, LossValue


class _Loss(Module):
    # The functional op pair each loss wraps (staticmethod: called through
    # the instance without binding `self`); each subclass sets them.
    _forward_op: Callable[..., Any]
    _backward_op: Callable[..., Any]

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean', 'sum' "
                             f"or 'none', got {reduction!r}")
        self.reduction = reduction

    def _kwargs(self, dtype):
        return {"reduction": self.reduction}

    @staticmethod
    def _as(a, dtype):
        """A class-weight array in the dtype of the logits it weighs (a
        list given at construction would otherwise be float64 against
        float32 logits)."""
        return None if a is None else np.asarray(a, dtype=dtype)

    def forward(self, out: Array, target: ArrayLike) -> LossValue:
        value = self._forward_op(out, target, **self._kwargs(getattr(out, "dtype", None)))
        self._save_for_backward(out, target)
        return value

    def backward(self, grad: Union[float, Array] = 1.0) -> Array:
        """Gradient of the loss with respect to `out`, scaled by `grad` (an
        array of the per-element shape for reduction="none")."""
        out, target = self._saved()
        return self._backward_op(out, target, **self._kwargs(out.dtype), grad=grad)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Softmax cross entropy of logits (N, C[, ...]) and class indices
    (N[, ...]) or class probabilities; optional class `weight` (C,), label
    smoothing and `ignore_index` (targets equal to it contribute nothing),
    as torch.nn.CrossEntropyLoss."""
    _forward_op = staticmethod(cross_entropy)
    _backward_op = staticmethod(cross_entropy_backward)

    def __init__(self, weight: Optional[ArrayLike] = None, label_smoothing: float = 0.0,
                 reduction: str = "mean", ignore_index: int = -100) -> None:
        super().__init__(reduction)
        self.weight = None if weight is None else np.asarray(weight)
        self.label_smoothing = float(label_smoothing)
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], "
                             f"got {label_smoothing}")
        self.ignore_index = int(ignore_index)

    def _kwargs(self, dtype):
        return {"weight": self._as(self.weight, dtype), "label_smoothing": self.label_smoothing,
                "reduction": self.reduction, "ignore_index": self.ignore_index}


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (N, C[, ...]) (e.g. a
    LogSoftmax output) and class indices (N[, ...]); optional class
    `weight` (C,) and `ignore_index`, as torch.nn.NLLLoss."""
    _forward_op = staticmethod(nll_loss)
    _backward_op = staticmethod(nll_loss_backward)

    def __init__(self, weight: Optional[ArrayLike] = None, ignore_index: int = -100,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.weight = None if weight is None else np.asarray(weight)
        self.ignore_index = int(ignore_index)

    def _kwargs(self, dtype):
        return {"weight": self._as(self.weight, dtype), "ignore_index": self.ignore_index,
                "reduction": self.reduction}


class MSELoss(_Loss):
    _forward_op = staticmethod(mse_loss)
    _backward_op = staticmethod(mse_loss_backward)


class L1Loss(_Loss):
    """Mean absolute error, as torch.nn.L1Loss."""
    _forward_op = staticmethod(l1_loss)
    _backward_op = staticmethod(l1_loss_backward)


class SmoothL1Loss(_Loss):
    """Quadratic below `beta`, linear above, as torch.nn.SmoothL1Loss."""
    _forward_op = staticmethod(smooth_l1_loss)
    _backward_op = staticmethod(smooth_l1_loss_backward)

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = float(beta)
        if not self.beta >= 0:
            raise ValueError(f"SmoothL1Loss: beta must be >= 0, got {beta}")

    def _kwargs(self, dtype):
        return {"reduction": self.reduction, "beta": self.beta}


class HuberLoss(_Loss):
    """Quadratic below `delta`, delta-sloped linear above, as torch.nn.HuberLoss."""
    _forward_op = staticmethod(huber_loss)
    _backward_op = staticmethod(huber_loss_backward)

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = float(delta)
        if not self.delta > 0:
            raise ValueError(f"HuberLoss: delta must be > 0, got {delta}")

    def _kwargs(self, dtype):
        return {"reduction": self.reduction, "delta": self.delta}


class BCEWithLogitsLoss(_Loss):
    """Sigmoid + binary cross entropy on logits, optional `weight` and
    `pos_weight`, as torch.nn.BCEWithLogitsLoss."""
    _forward_op = staticmethod(binary_cross_entropy_with_logits)
    _backward_op = staticmethod(binary_cross_entropy_with_logits_backward)

    def __init__(self, weight: Optional[ArrayLike] = None, pos_weight: Optional[ArrayLike] = None,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.weight = None if weight is None else np.asarray(weight)
        self.pos_weight = None if pos_weight is None else np.asarray(pos_weight)

    def _kwargs(self, dtype):
        return {"weight": self._as(self.weight, dtype), "pos_weight": self._as(self.pos_weight, dtype),
                "reduction": self.reduction}
