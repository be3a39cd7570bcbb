"""linear (a fully connected layer through the BLAS) and inverted dropout,
with their backward passes, as torch.nn.functional."""
from __future__ import annotations

import numbers
from typing import Literal, Optional, Tuple, Union, overload

import numpy as np

from convcore._runtime import memory
from convcore._runtime import seed as _seed
from convcore._runtime import threads as _threads
from convcore._kernels import blas as _blas
from convcore.utils.types import Array, Seed
from convcore.utils.validation import as_float_array, check_flag


# --- linear --------------------------------------------------------------------

def _linear_inputs(x, weight, fn):
    x = as_float_array(x, "input", fn=fn)
    if x.ndim < 1:
        raise ValueError(f"{fn}: input must be (in_features,) or (..., in_features), "
                         "got a 0-D array")
    weight = as_float_array(weight, "weight", ndim=2, dtype=x.dtype, fn=fn)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{fn}: input has {x.shape[-1]} features (shape {x.shape}) "
                         f"but weight of shape {weight.shape} expects {weight.shape[1]}")
    return x, weight


def linear(x: Array, weight: Array, bias: Optional[Array] = None) -> Array:
    """y = x @ weight.T + bias, as torch.nn.functional.linear.

    Parameters
    ----------
    x : ndarray of shape (..., in_features), float32 or float64
    weight : ndarray of shape (out_features, in_features), dtype of x
    bias : ndarray of shape (out_features,) or None

    Returns
    -------
    y : ndarray of shape (..., out_features)
    """
    fn = "linear"
    x, weight = _linear_inputs(x, weight, fn)
    out = weight.shape[0]
    if bias is not None:
        bias = as_float_array(bias, "bias", ndim=1, dtype=x.dtype, fn=fn)
        if bias.shape != (out,):
            raise ValueError(f"{fn}: bias must have shape ({out},) to match weight "
                             f"shape {weight.shape}, got {bias.shape}")
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    rows = x2.shape[0]
    if 2 <= rows <= TRANSPOSED_MAX_ROWS and out >= 2 * rows:
        # A few rows against many features: y.T = weight @ x.T, split over
        # the threads by the weight's rows, then transposed (small).
        yt = np.empty((out, rows), dtype=x.dtype)
        _matmul(False, True, np.ascontiguousarray(weight), x2, yt)
        y = np.empty((rows, out), dtype=x.dtype)
        if bias is not None:
            np.add(yt.T, bias, out=y)
        else:
            y[...] = yt.T
        return y.reshape(x.shape[:-1] + (out,))
    if bias is not None:  # the bias rides in the GEMM (beta = 1)
        y = np.empty((rows, out), dtype=x.dtype)
        y[...] = bias
    else:
        y = np.zeros((rows, out), dtype=x.dtype)
    _matmul(False, True, x2, np.ascontiguousarray(weight), y, beta=1.0)
    return y.reshape(x.shape[:-1] + (out,))


# linear's forward computes y.T = weight @ x.T for 2 to this many rows of
# x when there are at least twice as many output features: OpenBLAS then
# streams the weight as the product's rows, split over the threads by
# them, instead of packing it as the shared operand of column slabs (the
# measurements are in the commit that set it). One row stays a GEMV,
# which the swap slows down.
TRANSPOSED_MAX_ROWS = 64


def _matmul(trans_a, trans_b, a, b, c, beta=0.0):
    """c = op(a) @ op(b) + beta c on convcore's threads (blas.gemm_split),
    never the BLAS's own: one owner of the cores (convcore._runtime.threads)."""
    k = a.shape[0] if trans_a else a.shape[1]
    with _threads.blas_single():
        _blas.gemm_py(trans_a, trans_b, 1.0, a, b, beta, c,
                      _threads.kernel_threads(2 * c.size * k, _threads.FLOP_SECONDS))


def linear_backward(grad_y: Array, x: Array, weight: Array, bias: bool = True, *,
                    input_grad: bool = True, weight_grad: bool = True
                    ) -> Tuple[Optional[Array], Optional[Array], Optional[Array]]:
    """Gradients of linear: (grad_x, grad_weight, grad_bias or None).

    grad_y has shape (..., out_features); grad_x the shape of x, grad_weight
    the shape of weight, grad_bias (out_features,) when bias is True. As in
    conv2d_backward, a gradient not asked for (input_grad, weight_grad
    False) is not computed and returned as None."""
    fn = "linear_backward"
    input_grad = check_flag(input_grad, "input_grad", fn)
    weight_grad = check_flag(weight_grad, "weight_grad", fn)
    x, weight = _linear_inputs(x, weight, fn)
    grad_y = as_float_array(grad_y, "grad_y", dtype=x.dtype, fn=fn)
    expected = x.shape[:-1] + (weight.shape[0],)
    if grad_y.shape != expected:
        raise ValueError(f"{fn}: grad_y has shape {grad_y.shape} but input {x.shape} "
                         f"and weight {weight.shape} give output shape {expected}")
    g2 = np.ascontiguousarray(grad_y.reshape(-1, weight.shape[0]))
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    gx = gw = None
    if input_grad:
        gx = np.empty(x2.shape, dtype=x.dtype)
        _matmul(False, False, g2, np.ascontiguousarray(weight), gx)
        gx = gx.reshape(x.shape)
    if weight_grad:
        # A classifier's weight gradient can pass glibc's largest heap block
        # (VGG's 4096x4608, for one): reused memory, not pages faulted anew.
        gw = memory.empty(weight.shape, x.dtype)
        _matmul(True, False, g2, x2, gw)
    gb = g2.sum(axis=0) if bias else None
    return gx, gw, gb


# --- dropout -------------------------------------------------------------------

def _check_p(p, fn):
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real) \
            or not (0 <= p <= 1):
        raise ValueError(f"{fn}: p must be a probability in [0, 1], got {p!r}")
    return float(p)


def _scale(p, dtype):
    """1/(1-p), the inverted-dropout factor; 0 for p = 1 (all dropped)."""
    return dtype.type(0 if p == 1 else 1 / (1 - p))


def _generator(rng, fn):
    if rng is None:
        return _seed.default_generator()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"{fn}: rng seed must be >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"{fn}: rng must be a numpy.random.Generator, an int seed or "
                    f"None, got {type(rng).__name__}")


@overload
def dropout(x: Array, p: float = ..., training: bool = ..., rng: Seed = ..., *,
            return_mask: Literal[False] = ...) -> Array: ...
@overload
def dropout(x: Array, p: float = ..., training: bool = ..., rng: Seed = ..., *,
            return_mask: Literal[True]) -> Tuple[Array, Optional[Array]]: ...
def dropout(x: Array, p: float = 0.5, training: bool = True, rng: Seed = None, *,
            return_mask: bool = False) -> Union[Array, Tuple[Array, Optional[Array]]]:
    """Inverted dropout, as torch.nn.functional.dropout: in training, each
    element is kept with probability 1-p and scaled by 1/(1-p) (a dropped
    element is x*0, so NaN stays NaN as in torch); otherwise the identity.

    Parameters
    ----------
    x : ndarray, float32 or float64
    p : probability of dropping, in [0, 1]; p = 1 gives zeros
    training : bool; False returns a copy of x
    rng : numpy.random.Generator (advanced by the call), int seed, or None
        (convcore's default generator, see convcore.manual_seed)
    return_mask : also return the boolean keep-mask for dropout_backward
        (None when training is False: backward is then the identity)

    Returns
    -------
    y, or (y, mask)
    """
    x = as_float_array(x, "input", fn="dropout")
    return _dropout(x, p, training, rng, x.shape, return_mask, "dropout")


def dropout2d(x, p=0.5, training=True, rng=None, *, return_mask=False):
    """Channel dropout, as torch.nn.functional.dropout2d: in training, each
    whole channel x[n, c] is kept with probability 1-p and scaled by 1/(1-p).

    x : ndarray of shape (N, C, H, W) (or (N, C, L)); other arguments and
    the returns as dropout's, the mask of shape (N, C, 1, 1) (or (N, C, 1)).
    """
    fn = "dropout2d"
    x = as_float_array(x, "input", ndim=(3, 4), fn=fn)
    return _dropout(x, p, training, rng, x.shape[:2] + (1,) * (x.ndim - 2), return_mask, fn)


def _dropout(x, p, training, rng, mask_shape, return_mask, fn):
    """Inverted dropout of x with a keep-mask of mask_shape (broadcast over x)."""
    p = _check_p(p, fn)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{fn}: training must be a bool, got {training!r}")
    gen = _generator(rng, fn)
    if not training:
        return (x.copy(), None) if return_mask else x.copy()
    # u >= p holds with probability 1 - p (u uniform in [0, 1)).
    mask = gen.random(mask_shape, dtype=np.float32) >= np.float32(p) if p < 1 \
        else np.zeros(mask_shape, dtype=bool)
    y = x * mask
    y *= _scale(p, x.dtype)
    return (y, mask) if return_mask else y


def dropout_backward(grad_y: Array, mask: Optional[Array], p: float) -> Array:
    """grad_y * mask / (1-p), with the mask dropout or dropout2d returned; mask None
    (dropout in eval mode) gives a copy of grad_y."""
    fn = "dropout_backward"
    grad_y = as_float_array(grad_y, "grad_y", fn=fn)
    p = _check_p(p, fn)
    if mask is None:
        return grad_y.copy()
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError(f"{fn}: mask must be the boolean array dropout returned, "
                        f"got {type(mask).__name__} {getattr(mask, 'dtype', '')}".rstrip())
    # dropout2d's channel mask broadcasts over the spatial dimensions.
    if mask.ndim != grad_y.ndim or any(m not in (1, g) for m, g in zip(mask.shape, grad_y.shape)):
        raise ValueError(f"{fn}: mask has shape {mask.shape} but grad_y has shape "
                         f"{grad_y.shape}")
    gx = grad_y * mask
    gx *= _scale(p, grad_y.dtype)
    return gx
