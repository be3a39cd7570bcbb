"""Activations and their backward passes, as torch.nn.functional.

relu runs after every convolution and has an OpenMP kernel
(convcore._kernels.activation, several times NumPy's speed), as do the
backward passes of tanh and sigmoid; the rest are
NumPy (and scipy.special) expressions written to be stable for large |x| (no exp of a large
positive number is ever taken). softmax stays NumPy because its SIMD exp
beat a scalar-expf Cython kernel by a wide margin when measured. Every
function returns a new array of the input's dtype and never writes into its
arguments, except relu_ and relu_backward_, the in-place forms the fused
layers use on arrays they own. Backward functions take what the layer keeps:
the output y where the derivative is a function of y (relu, sigmoid, tanh,
softmax), the input x otherwise.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import special

from convcore._kernels import activation as _act
from convcore._runtime import memory
from convcore._runtime.threads import kernel_threads
from convcore.utils.validation import as_float_array, check_int
from convcore.utils.types import Array


def _input(x, fn, name="input"):
    return as_float_array(x, name, fn=fn)


def _grad_pair(grad_y, other, other_name, fn):
    """Check grad_y against the saved array (y or x): same shape and dtype."""
    other = as_float_array(other, other_name, fn=fn)
    grad_y = as_float_array(grad_y, "grad_y", dtype=other.dtype,
                            fn=fn)
    if grad_y.shape != other.shape:
        raise ValueError(f"{fn}: grad_y has shape {grad_y.shape} but {other_name} "
                         f"has shape {other.shape}")
    return grad_y, other


def _real(v, name, fn, positive=False):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) \
            or not math.isfinite(v) or (positive and v <= 0):
        need = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{fn}: {name} must be {need}, got {v!r}")
    return float(v)


# --- relu, leaky_relu -----------------------------------------------------------

def relu(x: Array) -> Array:
    """max(x, 0); NaN propagates."""
    x = _input(x, "relu")
    y = memory.empty_like(x)
    _act.relu(x.reshape(-1), y.reshape(-1), kernel_threads(x.size))
    return y


def relu_backward(grad_y: Array, y: Array) -> Array:
    """grad_y where the relu output y > 0, else 0."""
    grad_y, y = _grad_pair(grad_y, y, "y", "relu_backward")
    gx = memory.empty_like(y)
    _act.relu_backward(grad_y.reshape(-1), y.reshape(-1), gx.reshape(-1),
                       kernel_threads(y.size))
    return gx


def relu_(x: Array) -> Array:
    """max(x, 0) IN PLACE on x (a C-contiguous, writeable array the caller
    owns, e.g. a layer's fresh output); returns x."""
    fn = "relu_"
    if not isinstance(x, np.ndarray) or not x.flags.c_contiguous or not x.flags.writeable:
        raise ValueError(f"{fn}: input must be a C-contiguous, writeable ndarray "
                         "(it is written in place)")
    x = _input(x, fn)
    flat = x.reshape(-1)
    _act.relu(flat, flat, kernel_threads(x.size))
    return x


def relu_backward_(grad_y: Array, y: Array) -> Array:
    """relu_backward written into grad_y (C-contiguous, writeable, y's
    shape and dtype; the caller owns it); returns grad_y."""
    fn = "relu_backward_"
    if not isinstance(grad_y, np.ndarray) or not grad_y.flags.c_contiguous \
            or not grad_y.flags.writeable:
        raise ValueError(f"{fn}: grad_y must be a C-contiguous, writeable ndarray "
                         "(it is written in place)")
    grad_y, y = _grad_pair(grad_y, y, "y", fn)
    flat = grad_y.reshape(-1)
    _act.relu_backward(flat, y.reshape(-1), flat, kernel_threads(y.size))
    return grad_y
def relu6(x: Array) -> Array:
    """min(max(x, 0), 6) (MobileNet-v2's activation); NaN propagates."""
    x = _input(x, "relu6")
    y = memory.empty_like(x)
    _act.relu(x.reshape(-1), y.reshape(-1), kernel_threads(x.size), 6.0)
    return y


def relu6_backward(grad_y: Array, y: Array) -> Array:
    """grad_y where the relu6 output y is strictly between 0 and 6, else 0,
    as torch's hardtanh_backward (no gradient at the kinks). At a NaN the
    gradient passes, as relu_backward's and torch's float32 path do."""
    grad_y, y = _grad_pair(grad_y, y, "y", "relu6_backward")
    gx = memory.empty_like(y)
    _act.relu_backward(grad_y.reshape(-1), y.reshape(-1), gx.reshape(-1),
                       kernel_threads(y.size), 6.0)
    return gx


def leaky_relu(x: Array, negative_slope: float = 0.01) -> Array:
    """x where x > 0, else negative_slope * x."""
    fn = "leaky_relu"
    x = _input(x, fn)
    slope = x.dtype.type(_real(negative_slope, "negative_slope", fn))
    return np.where(x > 0, x, x * slope)


def leaky_relu_backward(grad_y: Array, x: Array, negative_slope: float = 0.01) -> Array:
    """grad_y where the input x > 0, else negative_slope * grad_y."""
    fn = "leaky_relu_backward"
    grad_y, x = _grad_pair(grad_y, x, "x", fn)
    slope = x.dtype.type(_real(negative_slope, "negative_slope", fn))
    return np.where(x > 0, grad_y, grad_y * slope)


# --- sigmoid, tanh ----------------------------------------------------------------

def sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)), computed from exp(-|x|) so it never overflows."""
    x = _input(x, "sigmoid")
    e = np.exp(-np.abs(x))          # in (0, 1]
    r = 1 / (1 + e)                 # sigmoid(|x|)
    return np.where(x >= 0, r, e * r)


def sigmoid_backward(grad_y: Array, y: Array) -> Array:
    """grad_y * y * (1 - y), from the sigmoid output y."""
    return _output_backward(grad_y, y, "sigmoid")


def tanh(x: Array) -> Array:
    return np.tanh(_input(x, "tanh"))


def tanh_backward(grad_y: Array, y: Array) -> Array:
    """grad_y * (1 - y^2), from the tanh output y."""
    return _output_backward(grad_y, y, "tanh")


def _output_backward(grad_y, y, kind):
    """grad_y * f'(x) from f's output y, in one threaded pass (the NumPy
    expressions made a temporary per operation, on one thread)."""
    grad_y, y = _grad_pair(grad_y, y, "y", f"{kind}_backward")
    gx = memory.empty_like(y)
    _act.output_backward(grad_y.reshape(-1), y.reshape(-1), gx.reshape(-1), kind,
                         kernel_threads(y.size))
    return gx


# --- softplus ----------------------------------------------------------------------

def softplus(x: Array, beta: float = 1.0, threshold: float = 20.0) -> Array:
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold
    (torch's linear region). Written as max(bx, 0) + log1p(exp(-|bx|)),
    which neither overflows nor loses the small tail for bx << 0."""
    fn = "softplus"
    x = _input(x, fn)
    beta = _real(beta, "beta", fn, positive=True)
    threshold = _real(threshold, "threshold", fn)
    bx = x * x.dtype.type(beta)
    soft = (np.maximum(bx, 0) + np.log1p(np.exp(-np.abs(bx)))) / x.dtype.type(beta)
    return np.where(bx > threshold, x, soft)


def softplus_backward(grad_y: Array, x: Array, beta: float = 1.0,
                      threshold: float = 20.0) -> Array:
    """grad_y * sigmoid(beta x), and grad_y in the linear region."""
    fn = "softplus_backward"
    grad_y, x = _grad_pair(grad_y, x, "x", fn)
    beta = _real(beta, "beta", fn, positive=True)
    threshold = _real(threshold, "threshold", fn)
    bx = x * x.dtype.type(beta)
    return np.where(bx > threshold, grad_y, grad_y * sigmoid(bx))


# --- gelu, silu -----------------------------------------------------------------------

_GELU_APPROXIMATIONS = ("none", "tanh")
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_TANH_CUBIC = 0.044715


def _gelu_approximate(approximate, fn):
    if approximate not in _GELU_APPROXIMATIONS:
        raise ValueError(f"{fn}: approximate must be one of {_GELU_APPROXIMATIONS}, "
                         f"got {approximate!r}")
    return approximate


def _gelu_tanh_inner(x):
    """tanh(sqrt(2/pi) (x + 0.044715 x^3)) of the tanh approximation."""
    return np.tanh(x.dtype.type(_SQRT_2_OVER_PI) * (x + x.dtype.type(_GELU_TANH_CUBIC) * x ** 3))


def gelu(x: Array, approximate: str = "none") -> Array:
    """x * Phi(x) with Phi the standard normal CDF, 0.5 x (1 + erf(x / sqrt 2)),
    or with approximate="tanh" 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))),
    as torch.nn.functional.gelu."""
    fn = "gelu"
    x = _input(x, fn)
    if _gelu_approximate(approximate, fn) == "tanh":
        return x * (1 + _gelu_tanh_inner(x)) / 2
    return x * (1 + special.erf(x / x.dtype.type(math.sqrt(2)))) / 2


def gelu_backward(grad_y: Array, x: Array, approximate: str = "none") -> Array:
    """grad_y * d gelu / dx at the input x: Phi(x) + x phi(x) exactly, or the
    derivative of the tanh form."""
    fn = "gelu_backward"
    grad_y, x = _grad_pair(grad_y, x, "x", fn)
    if _gelu_approximate(approximate, fn) == "tanh":
        t = _gelu_tanh_inner(x)
        inner_grad = x.dtype.type(_SQRT_2_OVER_PI) * (
            1 + x.dtype.type(3 * _GELU_TANH_CUBIC) * x * x)
        return grad_y * ((1 + t) / 2 + x * (1 - t * t) * inner_grad / 2)
    cdf = (1 + special.erf(x / x.dtype.type(math.sqrt(2)))) / 2
    pdf = np.exp(-x * x / 2) * x.dtype.type(1 / math.sqrt(2 * math.pi))
    return grad_y * (cdf + x * pdf)


def silu(x: Array) -> Array:
    """x * sigmoid(x) (swish), as torch.nn.functional.silu."""
    x = _input(x, "silu")
    return x * sigmoid(x)


def silu_backward(grad_y: Array, x: Array) -> Array:
    """grad_y * s (1 + x (1 - s)), s = sigmoid(x), at the input x."""
    grad_y, x = _grad_pair(grad_y, x, "x", "silu_backward")
    s = sigmoid(x)
    return grad_y * (s * (1 + x * (1 - s)))


# --- softmax, log_softmax -----------------------------------------------------------

def _axis(ndim, axis, fn):
    """The axis as a non-negative int, checked against ndim."""
    if ndim == 0:
        raise ValueError(f"{fn}: input must have at least 1 dimension, got a 0-D array")
    axis = check_int(axis, "axis", fn=fn)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{fn}: axis {axis} is out of range for a {ndim}-D input")
    return axis % ndim


def softmax(x: Array, axis: int = 1) -> Array:
    """exp(x) / sum(exp(x)) along `axis`, the maximum subtracted first so
    exp never overflows; a NaN makes its whole slice NaN, as in torch."""
    fn = "softmax"
    x = _input(x, fn)
    axis = _axis(x.ndim, axis, fn)
    if x.size == 0:
        return x.copy()
    y = x - x.max(axis=axis, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)
    return y


def softmax_backward(grad_y: Array, y: Array, axis: int = 1) -> Array:
    """y * (grad_y - sum(grad_y * y, axis)), from the softmax output y."""
    fn = "softmax_backward"
    grad_y, y = _grad_pair(grad_y, y, "y", fn)
    axis = _axis(y.ndim, axis, fn)
    gx = grad_y * y
    gx -= y * gx.sum(axis=axis, keepdims=True)
    return gx


def log_softmax(x: Array, axis: int = 1) -> Array:
    """x - max - log(sum(exp(x - max))) along `axis`."""
    fn = "log_softmax"
    x = _input(x, fn)
    axis = _axis(x.ndim, axis, fn)
    if x.size == 0:
        return x.copy()
    y = x - x.max(axis=axis, keepdims=True)
    y -= np.log(np.exp(y).sum(axis=axis, keepdims=True))
    return y


def log_softmax_backward(grad_y: Array, y: Array, axis: int = 1) -> Array:
    """grad_y - exp(y) * sum(grad_y, axis), from the log_softmax output y."""
    fn = "log_softmax_backward"
    grad_y, y = _grad_pair(grad_y, y, "y", fn)
    axis = _axis(y.ndim, axis, fn)
    gx = np.exp(y)
    gx *= -grad_y.sum(axis=axis, keepdims=True)
    gx += grad_y
    return gx
