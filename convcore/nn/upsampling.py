"""Upsample: F.interpolate as a layer; caches only the input shape."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from numpy.typing import DTypeLike

from convcore.functional.interpolate import (
    ScaleFactor, check_interpolate_arguments, interpolate, interpolate_backward,
    interpolate_output_size)
from convcore.nn._common import layer_dtype
from convcore.nn.module import Module
from convcore.utils.types import Array, IntOrPair


class Upsample(Module):
    """Resize (N, C, H, W) images to `size` or by `scale_factor` (exactly
    one), mode "nearest", "nearest-exact" or "bilinear" (align_corners),
    as torch.nn.Upsample; see convcore.functional.interpolate."""

    def __init__(self, size: Optional[IntOrPair] = None,
                 scale_factor: ScaleFactor = None,
                 mode: str = "nearest", align_corners: Optional[bool] = None,
                 recompute_scale_factor: Optional[bool] = None,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        self.size = tuple(size) if isinstance(size, list) else size
        self.scale_factor = (tuple(float(s) for s in scale_factor)
                             if isinstance(scale_factor, (tuple, list))
                             else None if scale_factor is None else float(scale_factor))
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor
        layer_dtype(dtype, "Upsample")
        check_interpolate_arguments(size, scale_factor, mode, align_corners, "Upsample")

    def _args(self) -> Tuple[Any, Any, str, Optional[bool], Optional[bool]]:
        return (self.size, self.scale_factor, self.mode, self.align_corners,
                self.recompute_scale_factor)

    def forward(self, x: Array) -> Array:
        y = interpolate(x, *self._args())
        self._save_for_backward(x.shape)
        return y

    def backward(self, grad_y: Array) -> Array:
        (shape,) = self._saved()
        return interpolate_backward(grad_y, shape, *self._args())

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        if len(input_shape) != 4:
            raise ValueError(f"Upsample: input must be 4-D (N, C, H, W), got shape "
                             f"{tuple(input_shape)}")
        return tuple(input_shape[:2]) + interpolate_output_size(
            input_shape, *self._args()[:4], fn="Upsample")

    def extra_repr(self) -> str:
        what = (f"size={self.size}" if self.scale_factor is None
                else f"scale_factor={self.scale_factor}")
        return f"{what}, mode={self.mode!r}"
