"""Activations. Each caches the one array its backward reads (the output
for ReLU/ReLU6/Sigmoid/Tanh/Softmax/LogSoftmax, the input for
LeakyReLU/Softplus/GELU/SiLU)."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from numpy.typing import DTypeLike

from convcore.functional.activations import (
    gelu, gelu_backward, leaky_relu, leaky_relu_backward, log_softmax, log_softmax_backward,
    relu, relu6, relu6_backward, relu_backward, sigmoid, sigmoid_backward, silu,
    silu_backward, softmax, softmax_backward, softplus, softplus_backward, tanh,
    tanh_backward)
from convcore.nn._common import layer_dtype
from convcore.nn.module import Module
from convcore.utils.types import Array


class _Elementwise(Module):
    def __init__(self, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        layer_dtype(dtype, type(self).__name__)  # no parameters; checked for uniformity

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        return tuple(input_shape)


class ReLU(_Elementwise):
    def forward(self, x: Array) -> Array:
        y = relu(x)
        self._save_for_backward(y)
        return y

    def backward(self, grad_y: Array) -> Array:
        (y,) = self._saved()
        return relu_backward(grad_y, y)


class ReLU6(_Elementwise):
    """min(max(x, 0), 6), MobileNet-v2's activation (torch.nn.ReLU6)."""

    def forward(self, x: Array) -> Array:
        y = relu6(x)
        self._save_for_backward(y)
        return y

    def backward(self, grad_y: Array) -> Array:
        (y,) = self._saved()
        return relu6_backward(grad_y, y)


class LeakyReLU(_Elementwise):
    def __init__(self, negative_slope: float = 0.01, dtype: DTypeLike = np.float32) -> None:
        super().__init__(dtype)
        self.negative_slope = float(negative_slope)

    def forward(self, x: Array) -> Array:
        y = leaky_relu(x, self.negative_slope)
        self._save_for_backward(x)
        return y

    def backward(self, grad_y: Array) -> Array:
        (x,) = self._saved()
        return leaky_relu_backward(grad_y, x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(_Elementwise):
    def forward(self, x: Array) -> Array:
        y = sigmoid(x)
        self._save_for_backward(y)
        return y

    def backward(self, grad_y: Array) -> Array:
        (y,) = self._saved()
        return sigmoid_backward(grad_y, y)


class Tanh(_Elementwise):
    def forward(self, x: Array) -> Array:
        y = tanh(x)
        self._save_for_backward(y)
        return y

    def backward(self, grad_y: Array) -> Array:
        (y,) = self._saved()
        return tanh_backward(grad_y, y)


class Softplus(_Elementwise):
    def __init__(self, beta: float = 1.0, threshold: float = 20.0,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__(dtype)
        self.beta = float(beta)
        self.threshold = float(threshold)

    def forward(self, x: Array) -> Array:
        y = softplus(x, self.beta, self.threshold)
        self._save_for_backward(x)
        return y

    def backward(self, grad_y: Array) -> Array:
        (x,) = self._saved()
        return softplus_backward(grad_y, x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class GELU(_Elementwise):
    """x * Phi(x), or its tanh approximation (approximate="tanh"), as torch.nn.GELU."""

    def __init__(self, approximate: str = "none", dtype: DTypeLike = np.float32) -> None:
        super().__init__(dtype)
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Array) -> Array:
        y = gelu(x, self.approximate)
        self._save_for_backward(x)
        return y

    def backward(self, grad_y: Array) -> Array:
        (x,) = self._saved()
        return gelu_backward(grad_y, x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Elementwise):
    """x * sigmoid(x), as torch.nn.SiLU."""

    def forward(self, x: Array) -> Array:
        y = silu(x)
        self._save_for_backward(x)
        return y

    def backward(self, grad_y: Array) -> Array:
        (x,) = self._saved()
        return silu_backward(grad_y, x)


def _legacy_softmax_dim(ndim):
    """torch's dimension for dim=None (nn.functional._get_softmax_dim):
    0 for 0-, 1- and 3-D inputs, 1 otherwise."""
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(_Elementwise):
    """softmax along `dim`, as torch.nn.Softmax (dim=None picks torch's
    legacy dimension: 0 for 1-D and 3-D inputs, 1 otherwise)."""
    _op = staticmethod(softmax)
    _backward_op = staticmethod(softmax_backward)

    def __init__(self, dim: Optional[int] = None, dtype: DTypeLike = np.float32) -> None:
        super().__init__(dtype)
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
            raise TypeError(f"{type(self).__name__}: dim must be an int or None, got {dim!r}")
        self.dim = dim

    def _dim(self, ndim):
        return _legacy_softmax_dim(ndim) if self.dim is None else self.dim

    def forward(self, x: Array) -> Array:
        y = self._op(x, self._dim(getattr(x, "ndim", 0)))
        self._save_for_backward(y)
        return y

    def backward(self, grad_y: Array) -> Array:
        (y,) = self._saved()
        return self._backward_op(grad_y, y, self._dim(y.ndim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log_softmax along `dim`, as torch.nn.LogSoftmax."""
    _op = staticmethod(log_softmax)
    _backward_op = staticmethod(log_softmax_backward)
