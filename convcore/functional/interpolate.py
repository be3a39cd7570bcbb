"""interpolate (resizing NCHW images) and its backward, as
torch.nn.functional.interpolate for modes "nearest", "nearest-exact" and
"bilinear".

Both modes are separable: along each spatial axis, output position o reads
input positions through a sparse (out, in) matrix of weights (one 1 per
row for nearest, 1 - lambda and lambda at the two neighbours for
bilinear). The forward applies the height then the width matrix; the
backward applies their transposes, the exact adjoint. Source coordinates
follow torch's CPU kernels, computed in the input's dtype as torch does
(float for float32), so the same neighbours and weights come out:

    nearest        src = min(floor(o * scale), in - 1), scale = 1/scale_factor
                   or in/out (o itself when out == in, o // 2 when out == 2 in)
    nearest-exact  src = min(floor((o + 0.5) * scale), in - 1)
    bilinear       src = o * (in - 1) / (out - 1)          align_corners=True
                   src = max((o + 0.5) * scale - 0.5, 0)  otherwise
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from scipy import sparse

from convcore.functional._pool_spec import input_shape_arg
from convcore.utils.validation import as_float_array, check_allocation, check_int
from convcore.utils.types import Array, IntOrPair

# scale_factor: one factor for both axes, or (sh, sw); None when size is given
ScaleFactor = Union[float, Tuple[float, float], None]

_MODES = ("nearest", "nearest-exact", "bilinear")


def _pair(v, name, fn):
    """A number or a pair of numbers -> (h, w)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{fn}: {name} must be a number or a pair (h, w) for a 4-D "
                             f"input, got {v!r}")
        return tuple(v)
    return (v, v)


def check_interpolate_arguments(size: Optional[IntOrPair], scale_factor: ScaleFactor,
                                mode: str, align_corners: Optional[bool],
                                fn: str = "interpolate"
                                ) -> Tuple[Optional[Tuple[int, ...]], Optional[Tuple[float, ...]]]:
    """The shape-independent checks of interpolate's arguments; ->
    (size (OH, OW) or None, scale_factor (sh, sw) or None)."""
    if mode not in _MODES:
        raise ValueError(f"{fn}: mode must be one of {_MODES}, got {mode!r}")
    if align_corners is not None:
        if mode != "bilinear":
            raise ValueError(f"{fn}: align_corners can only be set with mode='bilinear', "
                             f"got mode={mode!r}")
        if not isinstance(align_corners, (bool, np.bool_)):
            raise TypeError(f"{fn}: align_corners must be a bool or None, got "
                            f"{align_corners!r}")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{fn}: give exactly one of size and scale_factor, got "
                         f"size={size!r}, scale_factor={scale_factor!r}")
    if size is not None:
        return tuple(check_int(s, "size", 1, fn) for s in _pair(size, "size", fn)), None
    scales = _pair(scale_factor, "scale_factor", fn)
    for s in scales:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Real) \
                or not math.isfinite(s) or s <= 0:
            raise ValueError(f"{fn}: scale_factor must be a finite number > 0, got "
                             f"{scale_factor!r}")
    return None, tuple(float(s) for s in scales)


def interpolate_output_size(input_shape: Sequence[int], size: Optional[IntOrPair] = None,
                            scale_factor: ScaleFactor = None, mode: str = "nearest",
                            align_corners: Optional[bool] = None, fn: str = "interpolate"
                            ) -> Tuple[int, int]:
    """(OH, OW) of interpolate on an (N, C, H, W) input, checked."""
    return _plan(input_shape, size, scale_factor, mode, align_corners, None, fn)[0]


def _plan(input_shape, size, scale_factor, mode, align_corners, recompute_scale_factor, fn):
    """Checked (output (OH, OW), scales (sh, sw) or (None, None),
    align_corners) of an interpolation of an (N, C, H, W) input."""
    out, scales = check_interpolate_arguments(size, scale_factor, mode, align_corners, fn)
    if out is not None:
        return out, (None, None), bool(align_corners)
    out = tuple(math.floor(float(i) * s) for i, s in zip(input_shape[2:], scales))
    if min(out) < 1:
        raise ValueError(f"{fn}: scale_factor={scale_factor!r} gives an empty output "
                         f"{out[0]}x{out[1]} for input shape {tuple(input_shape)}")
    if recompute_scale_factor:  # the kernel then sees only the sizes
        scales = (None, None)
    return out, scales, bool(align_corners)


def _axis_matrix(in_size, out_size, scale, mode, align_corners, dtype):
    """The sparse (out_size, in_size) matrix of one axis (see the module doc)."""
    t = dtype.type
    o = np.arange(out_size)
    if mode != "bilinear":
        # torch computes nearest indices in float whatever the dtype
        ratio = (np.float32(1.0 / scale) if scale is not None
                 else np.float32(in_size) / np.float32(out_size))
        if mode == "nearest-exact":
            src = np.floor((o.astype(np.float32) + np.float32(0.5)) * ratio)
        elif out_size == in_size:
            src = o
        elif out_size == 2 * in_size:
            src = o >> 1
        else:
            src = np.floor(o.astype(np.float32) * ratio)
        return _one_hot(np.minimum(src.astype(np.intp), in_size - 1), in_size, dtype)
    # compute_scales_value: 1/scale_factor when given, else in/out
    ratio = t(1.0 / scale) if scale is not None else t(in_size) / t(out_size)
    if align_corners:
        step = t(in_size - 1) / t(out_size - 1) if out_size > 1 else t(0)
        src = step * o.astype(dtype)
    else:
        src = np.maximum(ratio * (o.astype(dtype) + t(0.5)) - t(0.5), t(0))
    i0 = np.minimum(src.astype(np.intp), in_size - 1)
    lam = np.clip(src - i0.astype(dtype), 0, 1).astype(dtype)
    i1 = np.minimum(i0 + 1, in_size - 1)
    rows = np.concatenate([o, o])
    cols = np.concatenate([i0, i1])
    weights = np.concatenate([1 - lam, lam])
    # csr_matrix sums the two entries where i0 == i1 (the last input row)
    return sparse.csr_matrix((weights, (rows, cols)), shape=(out_size, in_size), dtype=dtype)


def _one_hot(src, in_size, dtype):
    n = len(src)
    return sparse.csr_matrix((np.ones(n, dtype), (np.arange(n), src)), shape=(n, in_size),
                             dtype=dtype)


def _along(matrix, a, axis):
    """matrix (out, in) applied along `axis` of `a` (whose length is in)."""
    moved = np.moveaxis(a, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    out = np.asarray(matrix @ flat).reshape((matrix.shape[0],) + moved.shape[1:])
    return np.moveaxis(out, 0, axis)


def _matrices(shape, out, scales, mode, align_corners, dtype):
    return [_axis_matrix(shape[2 + k], out[k], scales[k], mode, align_corners, dtype)
            for k in range(2)]


def interpolate(input: Array, size: Optional[IntOrPair] = None,  # noqa: A002
                scale_factor: ScaleFactor = None, mode: str = "nearest",
                align_corners: Optional[bool] = None,
                recompute_scale_factor: Optional[bool] = None) -> Array:
    """Resize an (N, C, H, W) image batch, as torch.nn.functional.interpolate.

    Parameters
    ----------
    input : ndarray of shape (N, C, H, W), float32 or float64
    size : int or (OH, OW), or None
    scale_factor : number or (sh, sw) > 0, or None; exactly one of size
        and scale_factor. The output size is floor(H * sh); the source
        coordinates use 1/sh unless recompute_scale_factor is True (then
        H/OH, as with size)
    mode : "nearest" (torch's legacy rounding), "nearest-exact" or "bilinear"
    align_corners : bool or None (= False), bilinear only: True maps the
        corner pixels' centres onto each other, False the corners of the
        image (half-pixel centres)

    Returns
    -------
    y : ndarray of shape (N, C, OH, OW), dtype of input
    """
    fn = "interpolate"
    x = as_float_array(input, "input", ndim=4, fn=fn)
    out, scales, corners = _plan(x.shape, size, scale_factor, mode, align_corners,
                                 recompute_scale_factor, fn)
    out_shape = x.shape[:2] + out
    check_allocation(fn, (out_shape, x.dtype))
    if x.size == 0:
        return np.zeros(out_shape, x.dtype)
    mh, mw = _matrices(x.shape, out, scales, mode, corners, x.dtype)
    y = _along(mw, _along(mh, x, 2), 3)
    return np.ascontiguousarray(y, dtype=x.dtype)


def interpolate_backward(grad_y: Array, input_shape: Sequence[int],
                         size: Optional[IntOrPair] = None, scale_factor: ScaleFactor = None,
                         mode: str = "nearest", align_corners: Optional[bool] = None,
                         recompute_scale_factor: Optional[bool] = None) -> Array:
    """Gradient of interpolate with respect to its input: grad_y taken back
    through the transposed matrices. The arguments after input_shape must
    be the forward's.

    Returns
    -------
    grad_x : ndarray of shape input_shape, dtype of grad_y
    """
    fn = "interpolate_backward"
    grad_y = as_float_array(grad_y, "grad_y", ndim=4, fn=fn)
    shape = input_shape_arg(input_shape, grad_y, fn)
    out, scales, corners = _plan(shape, size, scale_factor, mode, align_corners,
                                 recompute_scale_factor, fn)
    if grad_y.shape[2:] != out:
        raise ValueError(f"{fn}: grad_y has shape {grad_y.shape} but interpolating input "
                         f"shape {shape} gives {shape[:2] + out}")
    check_allocation(fn, (shape, grad_y.dtype))
    if grad_y.size == 0:
        return np.zeros(shape, grad_y.dtype)
    mh, mw = _matrices(shape, out, scales, mode, corners, grad_y.dtype)
    gx = _along(mw.T.tocsr(), _along(mh.T.tocsr(), grad_y, 2), 3)
    return np.ascontiguousarray(gx, dtype=grad_y.dtype)
