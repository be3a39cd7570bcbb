"""Linear, Flatten and Identity."""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np
from numpy.typing import DTypeLike

from convcore import init
from convcore.utils.layout import (
    CHANNELS_FIRST, check_data_format, from_channels_first, shape_to_channels_first,
    to_channels_first)
from convcore.utils.validation import check_int
from convcore.functional.linear import linear, linear_backward
from convcore.nn._common import data_format_repr, layer_dtype
from convcore.nn.module import Module
from convcore.nn.parameter import Parameter
from convcore.utils.types import Array, Seed


class Linear(Module):
    """y = x W^T + b over the last axis, as torch.nn.Linear (weight
    (out_features, in_features)), initialised as torch does."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: DTypeLike = np.float32, *, rng: Seed = None) -> None:
        super().__init__()
        self.in_features = check_int(in_features, "in_features", 1, "Linear")
        self.out_features = check_int(out_features, "out_features", 1, "Linear")
        dt = layer_dtype(dtype, "Linear")
        self.weight = Parameter(np.zeros((self.out_features, self.in_features), dtype=dt))
        if bias:
            self.bias = Parameter(np.zeros(self.out_features, dtype=dt))
        else:
            self.register_parameter("bias", None)
        init.default_layer_init_(self.weight, self.bias, rng)

    # Parameters read from _parameters, not through Module.__getattr__ (a
    # failed attribute lookup first), as Conv2d does.
    def forward(self, x: Array) -> Array:
        params = self._parameters
        b = params.get("bias")
        y = linear(x, params["weight"].data, None if b is None else b.data)
        self._save_for_backward(x)
        return y

    def backward(self, grad_y: Array) -> Optional[Array]:
        (x,) = self._saved()
        params = self._parameters
        w, b = params["weight"], params.get("bias")
        gx, gw, gb = linear_backward(
            grad_y, x, w.data, bias=b is not None and b.requires_grad,
            input_grad=self._input_grad_needed(), weight_grad=w.requires_grad)
        w.accumulate_grad(gw, owned=True)
        if b is not None:
            b.accumulate_grad(gb, owned=True)
        return gx

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        if not input_shape or input_shape[-1] != self.in_features:
            raise ValueError(f"Linear: input's last dimension must be in_features="
                             f"{self.in_features}, got shape {tuple(input_shape)}")
        return tuple(input_shape[:-1]) + (self.out_features,)

    def macs(self, input_shape: Tuple[int, ...], output_shape: Tuple[int, ...]) -> int:
        return int(np.prod(output_shape)) * self.in_features

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Flatten dimensions start_dim..end_dim into one (torch.nn.Flatten).

    `data_format` (keyword-only) is the layout of the features it gets.
    With "channels_last", an input of 3 or more dimensions (N, H, W, C) is
    flattened in channels-first order, i.e. as (N, C, H, W) would be: the
    feature vector, and so the next Linear layer's weights, are then the
    same as in the channels-first (and the PyTorch) network, so one state
    dict serves both. (Keras flattens in its own channels-last order
    instead; its Dense weights need permuting to load here.)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1, dtype: DTypeLike = np.float32, *,
                 data_format: str = CHANNELS_FIRST) -> None:
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)
        self.data_format = check_data_format(data_format, "Flatten")
        layer_dtype(dtype, "Flatten")  # no parameters; checked for uniformity

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        shape = tuple(shape_to_channels_first(input_shape, self.data_format))
        nd = len(shape)
        s = self.start_dim % nd if nd else 0
        e = self.end_dim % nd if nd else 0
        if s > e:
            raise ValueError(f"Flatten: start_dim={self.start_dim} comes after "
                             f"end_dim={self.end_dim} for input shape {shape}")
        return shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:]

    def forward(self, x: Array) -> Array:
        # channels-last: a copy in channels-first order (reshape of the view)
        y = to_channels_first(x, self.data_format).reshape(self.output_shape(x.shape))
        self._save_for_backward(x.shape)
        return y

    def backward(self, grad_y: Array) -> Array:
        (shape,) = self._saved()
        grad_x = grad_y.reshape(shape_to_channels_first(shape, self.data_format))
        return from_channels_first(grad_x, self.data_format)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}" + data_format_repr(self)


class Identity(Module):
    """Returns its input; backward returns the output gradient."""

    def __init__(self, *args: Any, dtype: DTypeLike = np.float32, **kwargs: Any) -> None:
        super().__init__()
        layer_dtype(dtype, "Identity")

    def forward(self, x: Array) -> Array:
        return x

    def backward(self, grad_y: Array) -> Array:
        return grad_y

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        return tuple(input_shape)
