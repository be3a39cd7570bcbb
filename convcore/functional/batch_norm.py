"""Batch normalisation (BatchNorm1d/2d) forward and backward, and folding an
eval-mode batch norm into the preceding convolution, as PyTorch defines
them:

    training:  y = (x - mean_B) / sqrt(var_B + eps) * weight + bias, with
               the batch's per-channel mean and biased variance; then
               running_mean = (1 - momentum) * running_mean + momentum * mean_B
               running_var  = (1 - momentum) * running_var
                              + momentum * var_B * m / (m - 1)   (unbiased)
               where m = N * (spatial size) values per channel.
    eval:      the same with running_mean / running_var in place of the
               batch statistics.

running_mean and running_var are the one exception to "never modify the
caller's arrays": training updates them in place, as torch does.
Per-channel arithmetic is done here in float64 on (C,) arrays; the kernels
(convcore._kernels.batchnorm) do the reductions and elementwise passes.
"""
from __future__ import annotations

import math
import numbers
from typing import Literal, Optional, Tuple, Union, overload

import numpy as np

from convcore._kernels import batchnorm as _bn
from convcore._runtime import memory
from convcore._runtime.threads import kernel_threads
from convcore.utils.layout import (
    CHANNELS_FIRST, as_ncs, check_data_format, from_channels_first,
    refuse_other_layout, to_channels_first)
from convcore.utils.validation import check_allocation, check_flag
from convcore.utils.validation import as_float_array
from convcore.utils.types import Array

# (grad_x, grad_weight or None when there is no weight, grad_bias)
BatchNormGrads = Tuple[Array, Optional[Array], Array]


def _checked_input(x, fn, name="input"):
    x = as_float_array(x, name, ndim=(2, 3, 4), fn=fn)
    if x.shape[1] < 1 or any(s < 1 for s in x.shape[2:]):
        raise ValueError(f"{fn}: {name} of shape {x.shape} has an empty channel "
                         "or spatial dimension")
    return x


def _channel_vector(v, name, x, fn):
    """A per-channel (C,) array of x's dtype, or None -> float64 copy/None."""
    if v is None:
        return None
    v = as_float_array(v, name, ndim=1, dtype=x.dtype, fn=fn)
    if v.shape != (x.shape[1],):
        raise ValueError(f"{fn}: {name} must have shape ({x.shape[1]},) for "
                         f"input of shape {x.shape}, got {v.shape}")
    return v.astype(np.float64)


def _real(v, name, fn, minimum=None):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {v!r}")
    v = float(v)
    if not np.isfinite(v) or (minimum is not None and v < minimum):
        raise ValueError(f"{fn}: {name} must be a finite number"
                         + (f" >= {minimum}" if minimum is not None else "")
                         + f", got {v}")
    return v


def _running_stat(v, name, x, training, fn):
    """Check running_mean / running_var. Training writes them in place, so
    they must be writeable, C-contiguous arrays (a copy would be updated
    instead of the caller's buffer); in eval they are only read."""
    if v is None:
        if not training:
            raise ValueError(f"{fn}: {name} is required when training=False "
                             "(eval mode normalises with the running statistics)")
        return None
    if training and isinstance(v, np.ndarray):
        if not v.flags.c_contiguous:
            raise ValueError(f"{fn}: {name} must be C-contiguous: training "
                             f"updates it in place (shape {v.shape})")
        if not v.flags.writeable:
            raise ValueError(f"{fn}: {name} is read-only, but training updates "
                             f"it in place (shape {v.shape})")
    _channel_vector(v, name, x, fn)  # dtype, ndim and shape checks
    return v


def _layout_in(x, channel_vectors, data_format, fn):
    """(canonical data_format, x as a channels-first view), after checking
    x's layout against the (C,) arrays given, so that a channels-last
    image given as channels-first (or the reverse) is named as such rather
    than reported as a shape mismatch."""
    if data_format is not CHANNELS_FIRST:
        data_format = check_data_format(data_format, fn)
    lengths = {v.shape[0] for v in channel_vectors
               if isinstance(v, np.ndarray) and v.ndim == 1}
    if len(lengths) == 1:  # vectors that disagree are reported as such below
        refuse_other_layout(x, lengths.pop(), data_format, fn)
    return data_format, to_channels_first(x, data_format)


@overload
def batch_norm(x: Array, running_mean: Optional[Array], running_var: Optional[Array],
               weight: Optional[Array] = ..., bias: Optional[Array] = ...,
               training: bool = ..., momentum: float = ..., eps: float = ..., *,
               return_stats: Literal[False] = ...,
               data_format: str = ...) -> Array: ...
@overload
def batch_norm(x: Array, running_mean: Optional[Array], running_var: Optional[Array],
               weight: Optional[Array] = ..., bias: Optional[Array] = ...,
               training: bool = ..., momentum: float = ..., eps: float = ..., *,
               return_stats: Literal[True],
               data_format: str = ...) -> Tuple[Array, Array, Array]: ...
@overload
def batch_norm(x: Array, running_mean: Optional[Array], running_var: Optional[Array],
               weight: Optional[Array] = ..., bias: Optional[Array] = ...,
               training: bool = ..., momentum: float = ..., eps: float = ..., *,
               return_stats: bool = ...,
               data_format: str = ...) -> Union[Array, Tuple[Array, Array, Array]]: ...
def batch_norm(x: Array, running_mean: Optional[Array], running_var: Optional[Array],
               weight: Optional[Array] = None, bias: Optional[Array] = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5, *,
               return_stats: bool = False, data_format: str = CHANNELS_FIRST
               ) -> Union[Array, Tuple[Array, Array, Array]]:
    """Batch normalisation per channel, as torch.nn.functional.batch_norm.

    Parameters
    ----------
    x : ndarray of shape (N, C), (N, C, L) or (N, C, H, W), float32/float64
    running_mean, running_var : ndarray of shape (C,), x's dtype, or None
        (allowed only when training). Updated IN PLACE when training.
    weight, bias : ndarray of shape (C,) or None (1 and 0)
    training : bool, normalise with the batch's statistics (and update the
        running ones) rather than the running ones
    momentum : float, weight of the new batch in the running estimates
    eps : float >= 0, added to the variance
    return_stats : bool, keyword-only: also return the (mean, invstd) used,
        which batch_norm_backward takes
    data_format : keyword-only, "channels_first" (default: channels in dim
        1) or "channels_last" (channels in the last dim: (N, H, W, C) or
        (N, L, C)); the kernels normalise channels-first, so a channels-last
        x is transposed in and y out (views, convcore.utils.layout)

    Returns
    -------
    y : ndarray of x's shape and dtype; with return_stats (y, mean, invstd),
        each (C,) of x's dtype: batch statistics when training (biased
        variance), running ones in eval, invstd = 1 / sqrt(var + eps)
    """
    fn = "batch_norm"
    data_format, x = _layout_in(x, (running_mean, running_var, weight, bias),
                                data_format, fn)
    out = _batch_norm(fn, x, running_mean, running_var, weight, bias,
                      training, momentum, eps, return_stats, None, False)
    if return_stats:
        return (from_channels_first(out[0], data_format),) + out[1:]
    return from_channels_first(out, data_format)


def batch_norm_relu(x: Array, running_mean: Optional[Array], running_var: Optional[Array],
                    weight: Optional[Array] = None, bias: Optional[Array] = None,
                    training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                    residual: Optional[Array] = None, *, return_stats: bool = False,
                    max_value: Optional[float] = None) -> Union[Array, Tuple[Array, Array, Array]]:
    """relu(batch_norm(x, ...) + residual) in one pass over memory (the
    statistics pass aside): a conv-BN-ReLU layer's end, or a ResNet block's
    (residual: the shortcut's output). Arguments and results as batch_norm;
    residual is None or an array of x's shape and dtype; max_value (keyword)
    also caps the result (6.0: ReLU6, MobileNet-v2's). Bit for bit the
    unfused batch_norm, then `+ residual`, then relu (or relu6)."""
    return _batch_norm("batch_norm_relu", x, running_mean, running_var, weight,
                       bias, training, momentum, eps, return_stats, residual,
                       _cap(max_value, "batch_norm_relu"))


def _cap(max_value, fn):
    """The kernels' cap for a ReLU's max_value: +inf for None (plain ReLU)."""
    if max_value is None:
        return math.inf
    if isinstance(max_value, bool) or not isinstance(max_value, numbers.Real) \
            or not max_value > 0:
        raise ValueError(f"{fn}: max_value must be a positive number or None, "
                         f"got {max_value!r}")
    return float(max_value)


def _batch_norm(fn, x, running_mean, running_var, weight, bias, training,
                momentum, eps, return_stats, residual, relu):
    """relu: False (plain batch norm), or the ReLU's cap (math.inf: none)."""
    x = _checked_input(x, fn)
    training = check_flag(training, "training", fn)
    return_stats = check_flag(return_stats, "return_stats", fn)
    if momentum is None:
        raise TypeError(f"{fn}: momentum=None (cumulative average) is not "
                        "supported; pass a number")
    momentum = _real(momentum, "momentum", fn)
    eps = _real(eps, "eps", fn, minimum=0.0)
    running_mean = _running_stat(running_mean, "running_mean", x, training, fn)
    running_var = _running_stat(running_var, "running_var", x, training, fn)
    w = _channel_vector(weight, "weight", x, fn)
    b = _channel_vector(bias, "bias", x, fn)
    if residual is not None:
        residual = as_float_array(residual, "residual", dtype=x.dtype, fn=fn)
        if residual.shape != x.shape:
            raise ValueError(f"{fn}: residual of shape {residual.shape} must have "
                             f"the input's shape {x.shape}")
    C = x.shape[1]
    count = x.size // C   # values per channel
    if training and count < 2:
        raise ValueError(f"{fn}: expected more than 1 value per channel when "
                         f"training, got input of shape {x.shape}")
    nt = kernel_threads(x.size)
    xs = as_ncs(x)
    check_allocation(fn, (x.shape, x.dtype))
    y = memory.empty(x.shape, x.dtype)
    rs = _EMPTY[x.dtype] if residual is None else as_ncs(residual)
    # relu is False, or the fused ReLU's cap (+inf: plain ReLU).
    lower, upper = (-math.inf, math.inf) if relu is False else (0.0, relu)
    if training:
        mean, var, invstd = np.empty(C), np.empty(C), np.empty(C)
        # invstd = 1 / sqrt(var + eps); y = (x - mean) * (invstd * w) + b
        _bn.train_forward(xs, _or_empty(w), _or_empty(b), eps, rs, as_ncs(y), mean, var,
                          invstd, nt, lower, upper)
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
        invstd = 1.0 / np.sqrt(var + eps)
        scale = invstd if w is None else invstd * w
        shift = np.zeros(C) if b is None else b
        if count:  # an empty batch has nothing to normalise
            _bn.normalize(xs, mean, scale, shift, rs, as_ncs(y), nt, lower, upper)
    if training:
        # Unbiased variance in the running estimate, biased above: torch's rule.
        # Computed in float64, then stored in the arrays' own dtype.
        if running_mean is not None:
            running_mean[...] = ((1 - momentum) * running_mean.astype(np.float64)
                                 + momentum * mean)
        if running_var is not None:
            running_var[...] = ((1 - momentum) * running_var.astype(np.float64)
                                + momentum * var * (count / (count - 1)))
    if return_stats:
        return y, mean.astype(x.dtype), invstd.astype(x.dtype)
    return y


# "No array" for the kernels' optional (N, C, S) and (C,) arguments.
_EMPTY = {np.dtype(t): np.empty((0, 0, 0), dtype=t) for t in (np.float32, np.float64)}
_NO_VECTOR = np.empty(0)


def _or_empty(v):
    """A float64 (C,) vector for the kernels, or the empty one for None."""
    return _NO_VECTOR if v is None else v


def batch_norm_backward(grad_y: Array, x: Array, mean: Array, invstd: Array,
                        weight: Optional[Array] = None, training: bool = True, *,
                        data_format: str = CHANNELS_FIRST) -> BatchNormGrads:
    """Gradients of batch_norm with respect to x, weight and bias.

    Parameters
    ----------
    grad_y : ndarray of x's shape and dtype
    x : the forward's input
    mean, invstd : (C,) arrays from batch_norm(..., return_stats=True)
    weight : (C,) or None, the forward's weight
    training : bool. True: the statistics were the batch's, so they depend
        on x and the full formula applies,
            grad_x = weight * invstd * (grad_y - mean(grad_y)
                     - xhat * mean(grad_y * xhat)),  xhat = (x - mean) * invstd;
        False: they were constants (the running statistics),
            grad_x = grad_y * weight * invstd.

    data_format : keyword-only, the forward's (grad_y and x in it)

    Returns
    -------
    (grad_x, grad_weight, grad_bias): grad_weight = sum(grad_y * xhat) per
    channel (None when weight is None), grad_bias = sum(grad_y)
    """
    fn = "batch_norm_backward"
    data_format, x = _layout_in(x, (mean, invstd, weight), data_format, fn)
    gx, gw, gb = _batch_norm_backward(fn, to_channels_first(grad_y, data_format), None, x,
                                      mean, invstd, weight, training, False, False, False)
    return from_channels_first(gx, data_format), gw, gb


def batch_norm_relu_backward(grad_y: Array, y: Array, x: Array, mean: Array, invstd: Array,
                             weight: Optional[Array] = None, training: bool = True, *,
                             residual_grad: bool = False, overwrite_grad_y: bool = False,
                             max_value: Optional[float] = None
                             ) -> Union[BatchNormGrads,
                                        Tuple[Array, Optional[Array], Array, Array]]:
    """Gradients of batch_norm_relu: the ReLU mask (from its output y), the
    residual's gradient and batch_norm_backward's, in two passes over memory
    (masked sums, then the input gradient).

    Parameters
    ----------
    grad_y, y : the gradient of batch_norm_relu's output, and that output
    x, mean, invstd, weight, training : as batch_norm_backward
    residual_grad : bool, keyword-only; also return the residual's
        gradient (grad_y masked by the ReLU)
    max_value : keyword-only, the forward's (None: ReLU; 6.0: ReLU6, whose
        gradient is also zero where y reached the cap)
    overwrite_grad_y : bool, keyword-only; grad_y may be used as scratch and
        returned as a result (the caller owns it and will not read it
        again). Ignored unless grad_y is already a C-contiguous array of x's
        dtype.

    Returns
    -------
    (grad_x, grad_weight, grad_bias), and grad_residual last when
    residual_grad
    """
    return _batch_norm_backward("batch_norm_relu_backward", grad_y, y, x, mean,
                                invstd, weight, training,
                                _cap(max_value, "batch_norm_relu_backward"),
                                check_flag(residual_grad, "residual_grad",
                                           "batch_norm_relu_backward"),
                                overwrite_grad_y)


def _batch_norm_backward(fn, grad_y, y, x, mean, invstd, weight, training,
                         relu, residual_grad, overwrite):
    """relu: False, or the forward ReLU's cap (math.inf: none)."""
    x = _checked_input(x, fn)
    given = grad_y
    grad_y = as_float_array(grad_y, "grad_y", dtype=x.dtype, fn=fn)
    if grad_y.shape != x.shape:
        raise ValueError(f"{fn}: grad_y of shape {grad_y.shape} must have the "
                         f"input's shape {x.shape}")
    if relu is not False:
        y = as_float_array(y, "y", dtype=x.dtype, fn=fn)
        if y.shape != x.shape:
            raise ValueError(f"{fn}: y of shape {y.shape} must have the "
                             f"input's shape {x.shape}")
    training = check_flag(training, "training", fn)
    overwrite = check_flag(overwrite, "overwrite_grad_y", fn)
    for name, v in (("mean", mean), ("invstd", invstd)):
        if v is None:
            raise ValueError(f"{fn}: {name} is required (from batch_norm(..., "
                             "return_stats=True))")
    mean = _channel_vector(mean, "mean", x, fn)
    invstd = _channel_vector(invstd, "invstd", x, fn)
    w = _channel_vector(weight, "weight", x, fn)
    C = x.shape[1]
    count = x.size // C
    nt = kernel_threads(x.size)
    sum_g = np.zeros(C)
    sum_gd = np.zeros(C)
    # Scratch for the masked gradient: grad_y itself when the caller gave it
    # away (and it was not copied above), else a new array.
    own = overwrite and grad_y is given and grad_y.flags.writeable
    check_allocation(fn, (x.shape, x.dtype))
    if relu is not False:
        gm = grad_y if own else memory.empty(x.shape, x.dtype)
        gx = memory.empty(x.shape, x.dtype) if residual_grad else gm
    else:
        gm = grad_y
        gx = memory.empty(x.shape, x.dtype)
    if count == 0:
        gx[...] = 0
        gm[...] = 0
    else:
        # gx may be gm itself: each element is read, then written, in place.
        none = _EMPTY[x.dtype]
        _bn.backward(as_ncs(grad_y), none if relu is False else as_ncs(y), as_ncs(x),
                     mean, invstd, _or_empty(w), count, training,
                     none if relu is False else as_ncs(gm), as_ncs(gx), sum_g, sum_gd, nt,
                     math.inf if relu is False else relu)
    gw = (sum_gd * invstd).astype(x.dtype) if w is not None else None
    out = (gx, gw, sum_g.astype(x.dtype))
    return out + (gm,) if residual_grad else out


def fold_batch_norm(conv_weight: Array, conv_bias: Optional[Array], running_mean: Array,
                    running_var: Array, bn_weight: Optional[Array], bn_bias: Optional[Array],
                    eps: float = 1e-5) -> Tuple[Array, Array]:
    """Fold an eval-mode batch norm into the convolution (or linear layer)
    before it: conv(x, w', b') == batch_norm(conv(x, w, b), eval) with

        scale = bn_weight / sqrt(running_var + eps)
        w'    = w * scale (along output channels)
        b'    = (b - running_mean) * scale + bn_bias

    Parameters
    ----------
    conv_weight : ndarray (K, ...) e.g. (K, C/groups, R, S), float32/float64
    conv_bias : (K,) or None (zero)
    running_mean, running_var : (K,)
    bn_weight, bn_bias : (K,) or None (1 and 0)
    eps : the batch norm's eps

    Returns
    -------
    (weight, bias) new arrays of conv_weight's dtype; bias is always an array
    """
    fn = "fold_batch_norm"
    w = as_float_array(conv_weight, "conv_weight", fn=fn)
    if w.ndim < 2 or w.shape[0] < 1:
        raise ValueError(f"{fn}: conv_weight must be at least 2-D with output "
                         f"channels first, got shape {w.shape}")
    eps = _real(eps, "eps", fn, minimum=0.0)
    K = w.shape[0]

    def vec(v, name, default):
        if v is None:
            if default is None:
                raise ValueError(f"{fn}: {name} is required")
            return np.full(K, default, dtype=np.float64)
        v = as_float_array(v, name, ndim=1, dtype=w.dtype, fn=fn)
        if v.shape != (K,):
            raise ValueError(f"{fn}: {name} must have shape ({K},) to match "
                             f"conv_weight of shape {w.shape}, got {v.shape}")
        return v.astype(np.float64)

    b = vec(conv_bias, "conv_bias", 0.0)
    rm = vec(running_mean, "running_mean", None)
    rv = vec(running_var, "running_var", None)
    gamma = vec(bn_weight, "bn_weight", 1.0)
    beta = vec(bn_bias, "bn_bias", 0.0)
    scale = gamma / np.sqrt(rv + eps)
    new_w = (w * scale.reshape((K,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    new_b = ((b - rm) * scale + beta).astype(w.dtype)
    return new_w, new_b
