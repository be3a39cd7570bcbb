"""Fused element-wise epilogues for the layers between convolutions.

    bias_relu_(y, bias)              y = relu(y + bias[c]), IN PLACE on y
    bias_relu_backward(gy, y, ...)   (relu'd gradient, its per-channel sum)
    add_relu(a, b)                   relu(a + b) (a ResNet block's end
                                     without a batch norm before the sum)

bias_relu_ is the one function here that writes into its argument: it is
meant for an array the caller has just received from conv2d(..., bias=None)
and holds alone (the convolution layer keeps its input, not its output).
Batch norm + ReLU (+ residual) is convcore.functional.batch_norm_relu; the
kernels are batch norm's (convcore._kernels.batchnorm), which compute the
per-channel sums in double, channels in parallel and each in image order,
so every result here is the same at any thread count.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from convcore._kernels import batchnorm as _bn
from convcore._runtime import memory
from convcore._runtime.threads import kernel_threads
from convcore.functional.batch_norm import _cap
from convcore.utils.types import Array
from convcore.utils.validation import as_float_array, check_flag

_EMPTY = {np.dtype(t): np.empty((0, 0, 0), dtype=t) for t in (np.float32, np.float64)}


def _ncs(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def _nchw(a, name, fn):
    a = as_float_array(a, name, fn=fn)
    if a.ndim < 2 or a.shape[1] < 1:
        raise ValueError(f"{fn}: {name} must be (N, C, ...) with C >= 1, got shape "
                         f"{a.shape}")
    return a


def bias_relu_(y: Array, bias: Optional[Array] = None, *,
               max_value: Optional[float] = None) -> Array:
    """y = max(y + bias[c], 0) in place (NaN kept, as relu), also capped at
    max_value when given (6.0: ReLU6); returns y.

    Parameters
    ----------
    y : ndarray (N, C, ...) float32/float64, C-contiguous and writeable;
        modified IN PLACE (the caller owns it, e.g. conv2d's fresh output)
    bias : (C,) of y's dtype, or None (only the ReLU)

    The sum is rounded to y's dtype before the ReLU, so the result is bit
    for bit conv2d's bias add followed by relu.
    """
    fn = "bias_relu_"
    if not isinstance(y, np.ndarray) or not y.flags.c_contiguous or not y.flags.writeable:
        raise ValueError(f"{fn}: y must be a C-contiguous, writeable ndarray "
                         "(it is written in place)")
    y = _nchw(y, "y", fn)
    C = y.shape[1]
    if bias is None:
        shift = np.zeros(C)
    else:
        b = as_float_array(bias, "bias", ndim=1, dtype=y.dtype, fn=fn)
        if b.shape != (C,):
            raise ValueError(f"{fn}: bias must have shape ({C},) for y of shape "
                             f"{y.shape}, got {b.shape}")
        shift = b.astype(np.float64)
    if y.size:
        ys = _ncs(y)
        _bn.normalize(ys, np.zeros(C), np.ones(C), shift, _EMPTY[y.dtype], ys,
                      kernel_threads(y.size), 0.0, _cap(max_value, fn))
    return y


def bias_relu_backward(grad_y: Array, y: Array, bias: bool = True, *, overwrite_grad_y: bool = False,
                       max_value: Optional[float] = None) -> Tuple[Array, Optional[Array]]:
    """Backward of bias_relu_: the ReLU mask applied to grad_y, and the bias
    gradient (its sum over all but the channel axis), in one pass.

    Parameters
    ----------
    grad_y : gradient of the output, y's shape and dtype
    y : bias_relu_'s output
    bias : bool, whether to return the bias gradient (else None)
    overwrite_grad_y : bool, keyword-only; the masked gradient may be
        written into grad_y (the caller owns it and will not read it again).
        Ignored unless grad_y is a C-contiguous array of y's dtype.
    max_value : keyword-only, the forward's (None: ReLU)

    Returns
    -------
    (grad_x, grad_bias): grad_x of y's shape (grad_y itself when
    overwritten), grad_bias (C,) of y's dtype or None
    """
    fn = "bias_relu_backward"
    bias = check_flag(bias, "bias", fn)
    overwrite = check_flag(overwrite_grad_y, "overwrite_grad_y", fn)
    y = _nchw(y, "y", fn)
    given = grad_y
    grad_y = as_float_array(grad_y, "grad_y", dtype=y.dtype, fn=fn)
    if grad_y.shape != y.shape:
        raise ValueError(f"{fn}: grad_y has shape {grad_y.shape} but y has shape "
                         f"{y.shape}")
    C = y.shape[1]
    own = overwrite and grad_y is given and grad_y.flags.writeable
    gx = grad_y if own else memory.empty(y.shape, y.dtype)
    sum_g = np.zeros(C)
    if y.size:
        _bn.relu_grad_sums(_ncs(grad_y), _ncs(y), _EMPTY[y.dtype], np.zeros(C),
                           _ncs(gx), sum_g, np.zeros(C), kernel_threads(y.size),
                           _cap(max_value, fn))
    return gx, (sum_g.astype(y.dtype) if bias else None)


def add_relu(a: Array, b: Array) -> Array:
    """relu(a + b) as a new array (the sum rounded to the dtype first, so
    bit for bit `relu(a + b)`)."""
    fn = "add_relu"
    a = _nchw(a, "a", fn)
    b = as_float_array(b, "b", dtype=a.dtype, fn=fn)
    if a.shape != b.shape:
        raise ValueError(f"{fn}: a of shape {a.shape} and b of shape {b.shape} differ")
    return _sum(a, b, 0.0)


def _sum(a, b, lower=-np.inf):
    """max(a + b, lower) as a new array, on the threads (NumPy's a + b runs
    on one): a and b checked C-contiguous float arrays of one shape and
    dtype, (N, C, ...). The sum is rounded to the dtype before the clamp,
    and -inf clamps nothing (NaN passes), so it is bit for bit a + b."""
    C = a.shape[1]
    out = memory.empty(a.shape, a.dtype)
    if a.size:
        _bn.normalize(_ncs(a), np.zeros(C), np.ones(C), np.zeros(C), _ncs(b),
                      _ncs(out), kernel_threads(a.size), lower)
    return out


def gradient_sum(a: Array, b: Array) -> Array:
    """a + b for two gradients of one tensor (a container's branches): on
    the threads where both are C-contiguous float32/float64 (N, C, ...)
    arrays of one shape and dtype, else NumPy's a + b."""
    if (type(a) is np.ndarray and type(b) is np.ndarray and a.shape == b.shape
            and a.dtype == b.dtype and a.dtype in _EMPTY and a.ndim >= 2
            and a.shape[1] >= 1 and a.flags.c_contiguous and b.flags.c_contiguous):
        return _sum(a, b)
    return a + b
