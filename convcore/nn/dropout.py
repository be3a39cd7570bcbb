"""Dropout and Dropout2d: zero elements (whole channels) with probability p
in training mode and scale the rest by 1/(1-p); the identity in eval mode."""
from __future__ import annotations

from typing import Any, Callable, Tuple

import numpy as np
from numpy.typing import DTypeLike

from convcore import init
from convcore.functional.linear import dropout, dropout2d, dropout_backward
from convcore.nn._common import layer_dtype
from convcore.nn.module import Module
from convcore.utils.types import Array, Seed


class Dropout(Module):
    """`rng` (Generator, seed or None for convcore's default generator)
    draws the masks; backward reuses the mask of the last forward."""

    # The functional op drawing the mask (staticmethod: not bound to self).
    _op: Callable[..., Any] = staticmethod(dropout)

    def __init__(self, p: float = 0.5, dtype: DTypeLike = np.float32, *, rng: Seed = None) -> None:
        super().__init__()
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1], got {p}")
        self.p = p
        self.rng = init.get_rng(rng)
        layer_dtype(dtype, type(self).__name__)

    def forward(self, x: Array) -> Array:
        if not self.training or self.p == 0.0:
            self._save_for_backward(None)  # backward passes the gradient through
            return x
        y, mask = self._op(x, self.p, True, self.rng, return_mask=True)
        self._save_for_backward(mask)
        return y

    def backward(self, grad_y: Array) -> Array:
        (mask,) = self._saved()
        if mask is None:
            return grad_y
        return dropout_backward(grad_y, mask, self.p)

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        return tuple(input_shape)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout2d(Dropout):
    """Channel dropout, as torch.nn.Dropout2d: each channel of an (N, C, H, W)
    input is zeroed as a whole with probability p in training mode (the
    rest scaled by 1/(1-p)); the identity in eval mode."""

    _op = staticmethod(dropout2d)
