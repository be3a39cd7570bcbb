"""Local response normalisation across channels (AlexNet, VGG's A-LRN), as
torch.nn.functional.local_response_norm:

    y[n, c] = x[n, c] / (k + alpha / size * sum_{j in window(c)} x[n, j]^2) ** beta

with window(c) = [c - size//2, c + (size-1)//2] clipped to the channels
(PyTorch zero-pads size//2 channels before and (size-1)//2 after, and
divides by size whatever the clipping)."""
from __future__ import annotations

import numbers

import numpy as np

from convcore._kernels import lrn as _lrn
from convcore._runtime.threads import kernel_threads
from convcore.utils.layout import as_ncs
from convcore.utils.types import Array
from convcore.utils.validation import SSIZE_MAX, as_float_array, check_int


def _checked(x, size, alpha, beta, k, fn, name="input"):
    x = as_float_array(x, name, ndim=(3, 4, 5), fn=fn)
    size = check_int(size, "size", 1, fn)
    if size > SSIZE_MAX:  # the kernels take it as a Py_ssize_t
        raise ValueError(f"{fn}: size must be at most 2**63-1, got {size}")
    reals = []
    for arg, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{fn}: {arg} must be a real number, got {v!r}")
        if not np.isfinite(v):
            raise ValueError(f"{fn}: {arg} must be finite, got {v}")
        reals.append(float(v))
    if x.shape[1] < 1 or any(s < 1 for s in x.shape[2:]):
        raise ValueError(f"{fn}: {name} of shape {x.shape} has an empty channel "
                         "or spatial dimension")
    return x, size, reals


def local_response_norm(x: Array, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> Array:
    """Local response normalisation across channels.

    Parameters
    ----------
    x : ndarray of shape (N, C, L), (N, C, H, W) or (N, C, D, H, W),
        float32 or float64
    size : int >= 1, channels in the window
    alpha, beta, k : float, as in PyTorch (AlexNet: size 5, alpha 1e-4,
        beta 0.75, k 2)

    Returns
    -------
    y : ndarray of x's shape and dtype
    """
    fn = "local_response_norm"
    x, size, (alpha, beta, k) = _checked(x, size, alpha, beta, k, fn)
    y = np.empty(x.shape, dtype=x.dtype)
    if x.shape[0]:
        _lrn.forward(as_ncs(x), as_ncs(y), size, alpha, beta, k, kernel_threads(x.size * size))
    return y


def local_response_norm_backward(grad_y: Array, x: Array, size: int, alpha: float = 1e-4,
                                 beta: float = 0.75, k: float = 1.0) -> Array:
    """Gradient of local_response_norm with respect to x (the forward's
    input and arguments); -> grad_x of x's shape and dtype."""
    fn = "local_response_norm_backward"
    x, size, (alpha, beta, k) = _checked(x, size, alpha, beta, k, fn)
    grad_y = as_float_array(grad_y, "grad_y", dtype=x.dtype, fn=fn)
    if grad_y.shape != x.shape:
        raise ValueError(f"{fn}: grad_y of shape {grad_y.shape} must have the "
                         f"input's shape {x.shape}")
    gx = np.empty(x.shape, dtype=x.dtype)
    if x.shape[0]:
        _lrn.backward(as_ncs(grad_y), as_ncs(x), as_ncs(gx), size, alpha,
                      beta, k, kernel_threads(x.size * size))
    return gx
