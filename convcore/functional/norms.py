"""group_norm, layer_norm, instance_norm and their backward passes.

Each call checks its arguments, then views the input as (R, S, M) rows
for the shared kernel in convcore._kernels.group_layer_norm (see its
docstring for how each norm maps onto rows, segments and affine indices). Semantics are
PyTorch's: biased variance, eps inside the square root, an elementwise
affine over the normalised dimensions. The statistics returned with
return_stats=True (mean and 1/std per row, in the input's dtype) are what
the backward functions take.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from convcore._kernels import group_layer_norm as _norm
from convcore._runtime.threads import kernel_threads
from convcore.utils.types import Array
from convcore.utils.validation import as_float_array, check_allocation, check_int

# A norm's result: y, or (y, mean, invstd) with return_stats=True.
NormResult = Union[Array, Tuple[Array, Array, Array]]


def _check_eps(eps, fn):
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real) \
            or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{fn}: eps must be a finite number >= 0, got {eps!r}")
    return float(eps)


def _affine(a, name, shape, x, fn, default=0.0):
    """weight/bias: an array of `shape` with the input's dtype, flattened;
    None becomes `default` everywhere (1 for a weight, 0 for a bias), which
    is what the kernels expect."""
    if a is None:
        return np.full(math.prod(shape), default, dtype=x.dtype)
    a = as_float_array(a, name, dtype=x.dtype, fn=fn)
    if a.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)} for input "
                         f"of shape {x.shape}, got {a.shape}")
    return a.reshape(-1)


def _stats(a, name, shape, x, fn):
    a = as_float_array(a, name, dtype=x.dtype, fn=fn)
    if a.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)} (one per "
                         f"normalised row of input {x.shape}), got {a.shape}")
    return a.reshape(-1)


def _forward(x, rows, S, M, G, weight, bias, eps, stats_shape, return_stats):
    check_allocation("norm", (x.shape, x.dtype), (2 * rows, x.dtype))
    y = np.empty_like(x)
    mean = np.empty(rows, dtype=x.dtype)
    invstd = np.empty(rows, dtype=x.dtype)
    _norm.forward(x.reshape(-1), y.reshape(-1), S, M, G, eps, weight, bias,
                  mean, invstd, kernel_threads(x.size))
    if return_stats:
        return y, mean.reshape(stats_shape), invstd.reshape(stats_shape)
    return y


def _backward(grad_y, x, S, M, G, mean, invstd, weight, has_weight,
              affine_shape, fn):
    grad_y = as_float_array(grad_y, "grad_y", dtype=x.dtype, fn=fn)
    if grad_y.shape != x.shape:
        raise ValueError(f"{fn}: grad_y has shape {grad_y.shape} but input has "
                         f"shape {x.shape}")
    check_allocation(fn, (x.shape, x.dtype), (2 * G * S, np.float64))
    gx = np.empty_like(x)
    gw64 = np.empty(G * S, dtype=np.float64)
    gb64 = np.empty(G * S, dtype=np.float64)
    _norm.backward(grad_y.reshape(-1), x.reshape(-1), gx.reshape(-1), S, M, G,
                   weight, mean, invstd, gw64, gb64, kernel_threads(x.size))
    gw = gw64.astype(x.dtype).reshape(affine_shape) if has_weight else None
    gb = gb64.astype(x.dtype).reshape(affine_shape)
    return gx, gw, gb


# --- group norm ---------------------------------------------------------------

def _group_geometry(x, num_groups, fn):
    x = as_float_array(x, "input", fn=fn)
    if x.ndim < 2:
        raise ValueError(f"{fn}: input must be (N, C, *) with at least 2 "
                         f"dimensions, got shape {x.shape}")
    G = check_int(num_groups, "num_groups", 1, fn)
    N, C = x.shape[:2]
    if C % G:
        raise ValueError(f"{fn}: num_groups={G} does not divide the {C} channels "
                         f"of input shape {x.shape}")
    M = math.prod(x.shape[2:])
    return x, N, C, G, M


def group_norm(x: Array, num_groups: int, weight: Optional[Array] = None,
               bias: Optional[Array] = None, eps: float = 1e-5, *,
               return_stats: bool = False) -> NormResult:
    """Group normalisation, as torch.nn.functional.group_norm.

    Parameters
    ----------
    x : ndarray of shape (N, C, *), float32 or float64
    num_groups : int dividing C; each (n, group) is normalised over its C/G
        channels and all spatial positions
    weight, bias : ndarray of shape (C,) or None (per-channel affine)
    eps : float >= 0, added to the variance inside the square root
    return_stats : also return mean and invstd, each of shape (N, G)

    Returns
    -------
    y (shape and dtype of x), or (y, mean, invstd)
    """
    fn = "group_norm"
    x, N, C, G, M = _group_geometry(x, num_groups, fn)
    w = _affine(weight, "weight", (C,), x, fn, 1.0)
    b = _affine(bias, "bias", (C,), x, fn)
    return _forward(x, N * G, C // G, M, G, w, b, _check_eps(eps, fn), (N, G),
                    return_stats)


def group_norm_backward(grad_y: Array, x: Array, num_groups: int, mean: Array,
                        invstd: Array, weight: Optional[Array] = None
                        ) -> Tuple[Array, Optional[Array], Optional[Array]]:
    """Gradients of group_norm given its saved (N, G) mean and invstd.

    Returns (grad_x, grad_weight or None when weight is None, grad_bias),
    grad_weight/grad_bias of shape (C,)."""
    fn = "group_norm_backward"
    x, N, C, G, M = _group_geometry(x, num_groups, fn)
    w = _affine(weight, "weight", (C,), x, fn, 1.0)
    mean = _stats(mean, "mean", (N, G), x, fn)
    invstd = _stats(invstd, "invstd", (N, G), x, fn)
    return _backward(grad_y, x, C // G, M, G, mean, invstd, w, weight is not None,
                     (C,), fn)


# --- instance norm ------------------------------------------------------------

def _instance_geometry(x, fn):
    x = as_float_array(x, "input", fn=fn)
    if x.ndim < 3:
        raise ValueError(f"{fn}: input must be (N, C, L) or (N, C, H, W, ...) "
                         f"with at least one spatial dimension, got shape {x.shape}")
    return x, x.shape[0], x.shape[1], math.prod(x.shape[2:])


def instance_norm(x: Array, weight: Optional[Array] = None,
                  bias: Optional[Array] = None, eps: float = 1e-5, *,
                  return_stats: bool = False) -> NormResult:
    """Instance normalisation (each (n, c) plane on its own), as
    torch.nn.functional.instance_norm with use_input_stats=True.

    x : (N, C, *spatial); weight, bias : (C,) or None; stats of shape (N, C).
    """
    fn = "instance_norm"
    x, N, C, M = _instance_geometry(x, fn)
    w = _affine(weight, "weight", (C,), x, fn, 1.0)
    b = _affine(bias, "bias", (C,), x, fn)
    return _forward(x, N * C, 1, M, C, w, b, _check_eps(eps, fn), (N, C),
                    return_stats)


def instance_norm_backward(grad_y: Array, x: Array, mean: Array, invstd: Array,
                           weight: Optional[Array] = None) -> Tuple[Array, Optional[Array], Optional[Array]]:
    """Gradients of instance_norm: (grad_x, grad_weight or None, grad_bias)."""
    fn = "instance_norm_backward"
    x, N, C, M = _instance_geometry(x, fn)
    w = _affine(weight, "weight", (C,), x, fn, 1.0)
    mean = _stats(mean, "mean", (N, C), x, fn)
    invstd = _stats(invstd, "invstd", (N, C), x, fn)
    return _backward(grad_y, x, 1, M, C, mean, invstd, w, weight is not None,
                     (C,), fn)


# --- layer norm ---------------------------------------------------------------

def _layer_geometry(x, normalized_shape, fn):
    x = as_float_array(x, "input", fn=fn)
    if isinstance(normalized_shape, (tuple, list)):
        shape = tuple(check_int(d, "normalized_shape", 1, fn) for d in normalized_shape)
    else:
        shape = (check_int(normalized_shape, "normalized_shape", 1, fn),)
    if not shape or x.ndim < len(shape) or x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"{fn}: normalized_shape {shape} must match the last "
                         f"dimensions of input shape {x.shape}")
    lead = x.shape[:x.ndim - len(shape)]
    return x, shape, lead


def layer_norm(x: Array, normalized_shape: Union[int, Sequence[int]],
               weight: Optional[Array] = None, bias: Optional[Array] = None,
               eps: float = 1e-5, *, return_stats: bool = False) -> NormResult:
    """Layer normalisation over the trailing `normalized_shape` dimensions,
    as torch.nn.functional.layer_norm.

    x : (*lead, *normalized_shape); weight, bias : normalized_shape or None
    (elementwise affine); stats of shape `lead` (one per normalised row).
    """
    fn = "layer_norm"
    x, shape, lead = _layer_geometry(x, normalized_shape, fn)
    w = _affine(weight, "weight", shape, x, fn, 1.0)
    b = _affine(bias, "bias", shape, x, fn)
    return _forward(x, math.prod(lead), math.prod(shape), 1, 1, w, b,
                    _check_eps(eps, fn), lead, return_stats)


def layer_norm_backward(grad_y: Array, x: Array, normalized_shape: Union[int, Sequence[int]],
                        mean: Array, invstd: Array, weight: Optional[Array] = None
                        ) -> Tuple[Array, Optional[Array], Optional[Array]]:
    """Gradients of layer_norm: (grad_x, grad_weight or None, grad_bias),
    the parameter gradients of shape normalized_shape."""
    fn = "layer_norm_backward"
    x, shape, lead = _layer_geometry(x, normalized_shape, fn)
    w = _affine(weight, "weight", shape, x, fn, 1.0)
    mean = _stats(mean, "mean", lead, x, fn)
    invstd = _stats(invstd, "invstd", lead, x, fn)
    return _backward(grad_y, x, math.prod(shape), 1, 1, mean, invstd, w,
                     weight is not None, shape, fn)
