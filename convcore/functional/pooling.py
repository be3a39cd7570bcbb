"""Max, average and adaptive pooling, forward and backward, as
torch.nn.functional's: checks, output allocation, dispatch to
convcore._kernels.pool (parallel over the N*C planes).

The backwards take the input's shape, since pooling's output size does not
determine it (PyTorch's note on output size not being invertible).

Each op takes a keyword-only `data_format`: "channels_first" (NCHW,
default) or "channels_last" (NHWC); every array and shape argument and
result is then in that layout. The kernels pool NCHW planes: a
channels-last call transposes in and out (views, convcore.utils.layout)."""
from __future__ import annotations

from typing import Dict, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np

from convcore._kernels import pool as _pool
from convcore._runtime import memory
from convcore._runtime.threads import kernel_threads
from convcore.functional._pool_spec import (
    PoolSpec, adaptive_output_size, input_shape_arg, pool_spec)
from convcore.utils.layout import (
    CHANNELS_FIRST, check_data_format, from_channels_first, shape_to_channels_first,
    to_channels_first)
from convcore.utils.validation import (
    as_float_array, check_allocation, check_flag, exact_geometry)
from convcore.utils.types import AdaptiveSize, Array, IntOrPair

# Checked pooling geometry by (input shape, kernel_size, stride, padding,
# dilation, ceil_mode), for arguments of exact types only (see
# exact_geometry): repeated calls of one shape skip pool_spec's checks.
# Emptied when full.
_SPEC_CACHE_SIZE = 256
_specs: Dict[tuple, PoolSpec] = {}


def _pool_spec(x_shape, kernel_size, stride, padding, dilation, ceil_mode, fn):
    """pool_spec(...), from the cache when these exact arguments passed before."""
    if not (exact_geometry(kernel_size) and (stride is None or exact_geometry(stride))
            and exact_geometry(padding) and exact_geometry(dilation)
            and type(ceil_mode) is bool):
        return pool_spec(x_shape, kernel_size, stride, padding, dilation, ceil_mode, fn)
    key = (x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    spec = _specs.get(key)
    if spec is None:
        spec = pool_spec(x_shape, kernel_size, stride, padding, dilation, ceil_mode, fn)
        if len(_specs) >= _SPEC_CACHE_SIZE:
            _specs.clear()
        _specs[key] = spec
    return spec


def _layout_in(data_format, fn, *arrays):
    """(canonical data_format, the arrays as channels-first views)."""
    if data_format is CHANNELS_FIRST:
        return (data_format,) + arrays
    data_format = check_data_format(data_format, fn)
    return (data_format,) + tuple(to_channels_first(a, data_format) for a in arrays)


@overload
def max_pool2d(x: Array, kernel_size: IntOrPair, stride: Optional[IntOrPair] = ...,
               padding: IntOrPair = ..., dilation: IntOrPair = ..., ceil_mode: bool = ...,
               return_indices: Literal[False] = ..., *,
               data_format: str = ...) -> Array: ...
@overload
def max_pool2d(x: Array, kernel_size: IntOrPair, stride: Optional[IntOrPair],
               padding: IntOrPair, dilation: IntOrPair, ceil_mode: bool,
               return_indices: Literal[True], *,
               data_format: str = ...) -> Tuple[Array, Array]: ...
@overload
def max_pool2d(x: Array, kernel_size: IntOrPair, stride: Optional[IntOrPair] = ...,
               padding: IntOrPair = ..., dilation: IntOrPair = ..., ceil_mode: bool = ...,
               *, return_indices: Literal[True],
               data_format: str = ...) -> Tuple[Array, Array]: ...
@overload
def max_pool2d(x: Array, kernel_size: IntOrPair, stride: Optional[IntOrPair] = ...,
               padding: IntOrPair = ..., dilation: IntOrPair = ..., ceil_mode: bool = ...,
               return_indices: bool = ..., *,
               data_format: str = ...) -> Union[Array, Tuple[Array, Array]]: ...
def max_pool2d(x: Array, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
               return_indices: bool = False, *, data_format: str = CHANNELS_FIRST
               ) -> Union[Array, Tuple[Array, Array]]:
    """2-D max pooling, as torch.nn.functional.max_pool2d.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    kernel_size : int or (h, w)
    stride : int or (h, w), default kernel_size
    padding : int or (h, w), at most half the kernel; padding is -inf
    dilation : int or (h, w)
    ceil_mode : bool, round the output size up (the last window must
        start inside the input or the leading padding)
    return_indices : bool, also return the argmax

    Returns
    -------
    y : ndarray of shape (N, C, OH, OW), dtype of x; a NaN in a window
        gives NaN, ties keep the first (row-major) position
    indices : int64 ndarray of shape (N, C, OH, OW), only with
        return_indices: flat index h*W + w into each input plane (-1 for a
        window lying wholly in the padding, possible only with dilation)
    (with data_format="channels_last", x, y and indices are (N, H, W, C))
    """
    fn = "max_pool2d"
    data_format, x = _layout_in(data_format, fn, x)
    x = as_float_array(x, "input", ndim=4, fn=fn)
    spec = _pool_spec(x.shape, kernel_size, stride, padding, dilation, ceil_mode, fn)
    return_indices = check_flag(return_indices, "return_indices", fn)
    check_allocation(fn, (spec.out_shape, x.dtype),
                     (spec.out_shape if return_indices else 0, np.int64))
    y = memory.empty(spec.out_shape, x.dtype)
    idx = np.empty(spec.out_shape, dtype=np.int64) if return_indices else None
    if spec.N:  # an empty batch has nothing to compute
        _pool.max_pool2d(x, y, idx, spec.geom, kernel_threads(x.size))
    y = from_channels_first(y, data_format)
    return (y, from_channels_first(idx, data_format)) if return_indices else y


@overload
def adaptive_max_pool2d(x: Array, output_size: AdaptiveSize,
                        return_indices: Literal[False] = ..., *,
                        data_format: str = ...) -> Array: ...
@overload
def adaptive_max_pool2d(x: Array, output_size: AdaptiveSize,
                        return_indices: Literal[True], *,
                        data_format: str = ...) -> Tuple[Array, Array]: ...
@overload
def adaptive_max_pool2d(x: Array, output_size: AdaptiveSize, *,
                        return_indices: Literal[True],
                        data_format: str = ...) -> Tuple[Array, Array]: ...
@overload
def adaptive_max_pool2d(x: Array, output_size: AdaptiveSize,
                        return_indices: bool = ..., *,
                        data_format: str = ...) -> Union[Array, Tuple[Array, Array]]: ...
def adaptive_max_pool2d(x: Array, output_size: AdaptiveSize, return_indices: bool = False, *,
                        data_format: str = CHANNELS_FIRST
                        ) -> Union[Array, Tuple[Array, Array]]:
    """Adaptive max pooling, as torch.nn.functional.adaptive_max_pool2d:
    output cell (i, j) is the max over rows [floor(i*H/OH), ceil((i+1)*H/OH))
    and the columns likewise. Indices and data_format as max_pool2d's."""
    fn = "adaptive_max_pool2d"
    data_format, x = _layout_in(data_format, fn, x)
    x = as_float_array(x, "input", ndim=4, fn=fn)
    OH, OW = adaptive_output_size(x.shape, output_size, fn)
    return_indices = check_flag(return_indices, "return_indices", fn)
    shape = x.shape[:2] + (OH, OW)
    check_allocation(fn, (shape, x.dtype), (shape if return_indices else 0, np.int64))
    y = memory.empty(shape, x.dtype)
    idx = np.empty(shape, dtype=np.int64) if return_indices else None
    if x.shape[0]:
        _pool.adaptive_max_pool2d(x, y, idx, kernel_threads(x.size))
    y = from_channels_first(y, data_format)
    return (y, from_channels_first(idx, data_format)) if return_indices else y


def _scatter_through_indices(grad_y, indices, input_shape, fn, data_format):
    data_format, grad_y, indices = _layout_in(data_format, fn, grad_y, indices)
    input_shape = shape_to_channels_first(input_shape, data_format)
    grad_y = as_float_array(grad_y, "grad_y", ndim=4, fn=fn)
    if not isinstance(indices, np.ndarray) or indices.dtype != np.int64:
        raise TypeError(f"{fn}: indices must be an int64 numpy.ndarray (as "
                        f"returned with return_indices=True), got "
                        f"{getattr(indices, 'dtype', type(indices).__name__)}")
    if indices.shape != grad_y.shape:
        raise ValueError(f"{fn}: indices of shape {indices.shape} must have "
                         f"grad_y's shape {grad_y.shape}")
    shape = input_shape_arg(input_shape, grad_y, fn)
    indices = np.ascontiguousarray(indices)
    plane = shape[2] * shape[3]
    # The kernel trusts the indices; a stray one would write outside grad_x.
    if indices.size and (indices.min() < -1 or indices.max() >= plane):
        raise ValueError(
            f"{fn}: indices must lie in [0, {plane}) for input_shape {shape} "
            f"(or be -1), got values in [{indices.min()}, {indices.max()}]")
    check_allocation(fn, (shape, grad_y.dtype))
    gx = memory.empty(shape, grad_y.dtype)
    if shape[0]:
        _pool.max_pool2d_backward(grad_y, indices, gx, kernel_threads(gx.size))
    return from_channels_first(gx, data_format)


def max_pool2d_backward(grad_y: Array, indices: Array, input_shape: Sequence[int], *,
                        data_format: str = CHANNELS_FIRST) -> Array:
    """Gradient of max_pool2d with respect to its input: grad_y scattered
    (added) to the saved argmax positions.

    Parameters
    ----------
    grad_y : ndarray of shape (N, C, OH, OW)
    indices : int64 ndarray of shape (N, C, OH, OW), from
        max_pool2d(..., return_indices=True)
    input_shape : (N, C, H, W) of the forward's input
    data_format : keyword-only, the forward's: with "channels_last",
        grad_y, indices and input_shape are (N, ..., C)

    Returns
    -------
    grad_x : ndarray of shape input_shape, dtype of grad_y
    """
    return _scatter_through_indices(grad_y, indices, input_shape,
                                    "max_pool2d_backward", data_format)


def adaptive_max_pool2d_backward(grad_y: Array, indices: Array, input_shape: Sequence[int], *,
                                 data_format: str = CHANNELS_FIRST) -> Array:
    """Gradient of adaptive_max_pool2d; arguments as max_pool2d_backward."""
    return _scatter_through_indices(grad_y, indices, input_shape,
                                    "adaptive_max_pool2d_backward", data_format)


def avg_pool2d(x: Array, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               *, data_format: str = CHANNELS_FIRST) -> Array:
    """2-D average pooling, as torch.nn.functional.avg_pool2d.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    kernel_size, stride (default kernel_size), padding : int or (h, w);
        padding is zeros, at most half the kernel
    ceil_mode : bool, round the output size up
    count_include_pad : bool, divide by the window size including padding
        (but never past the padding, for ceil_mode windows), or only by
        the number of input elements in the window
    data_format : keyword-only, "channels_first" or "channels_last" (x
        and y (N, H, W, C))

    Returns
    -------
    y : ndarray of shape (N, C, OH, OW), dtype of x
    """
    fn = "avg_pool2d"
    data_format, x = _layout_in(data_format, fn, x)
    x = as_float_array(x, "input", ndim=4, fn=fn)
    spec = _pool_spec(x.shape, kernel_size, stride, padding, 1, ceil_mode, fn)
    count_include_pad = check_flag(count_include_pad, "count_include_pad", fn)
    check_allocation(fn, (spec.out_shape, x.dtype))
    y = memory.empty(spec.out_shape, x.dtype)
    if spec.N:
        _pool.avg_pool2d(x, y, spec.geom, count_include_pad, kernel_threads(x.size))
    return from_channels_first(y, data_format)


def avg_pool2d_backward(grad_y: Array, input_shape: Sequence[int], kernel_size: IntOrPair,
                        stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
                        ceil_mode: bool = False, count_include_pad: bool = True, *,
                        data_format: str = CHANNELS_FIRST) -> Array:
    """Gradient of avg_pool2d with respect to its input; the pooling
    arguments (data_format too) must be the forward's.

    Returns
    -------
    grad_x : ndarray of shape input_shape, dtype of grad_y
    """
    fn = "avg_pool2d_backward"
    data_format, grad_y = _layout_in(data_format, fn, grad_y)
    input_shape = shape_to_channels_first(input_shape, data_format)
    grad_y = as_float_array(grad_y, "grad_y", ndim=4, fn=fn)
    shape = input_shape_arg(input_shape, grad_y, fn)
    spec = _pool_spec(shape, kernel_size, stride, padding, 1, ceil_mode, fn)
    count_include_pad = check_flag(count_include_pad, "count_include_pad", fn)
    if grad_y.shape != spec.out_shape:
        raise ValueError(f"{fn}: grad_y has shape {grad_y.shape} but pooling "
                         f"input_shape {shape} gives {spec.out_shape}")
    check_allocation(fn, (shape, grad_y.dtype))
    gx = memory.empty(shape, grad_y.dtype)
    if spec.N:
        _pool.avg_pool2d_backward(grad_y, gx, spec.geom, count_include_pad,
                                  kernel_threads(gx.size))
    return from_channels_first(gx, data_format)


def adaptive_avg_pool2d(x: Array, output_size: AdaptiveSize, *,
                        data_format: str = CHANNELS_FIRST) -> Array:
    """Adaptive average pooling, as torch.nn.functional.adaptive_avg_pool2d:
    output cell (i, j) averages rows [floor(i*H/OH), ceil((i+1)*H/OH)) and
    the columns likewise. output_size 1 is global average pooling.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    output_size : int, (OH, OW), or a pair with None keeping that input size
    data_format : keyword-only, "channels_first" or "channels_last" (x
        and y (N, H, W, C))

    Returns
    -------
    y : ndarray of shape (N, C, OH, OW), dtype of x
    """
    fn = "adaptive_avg_pool2d"
    data_format, x = _layout_in(data_format, fn, x)
    x = as_float_array(x, "input", ndim=4, fn=fn)
    OH, OW = adaptive_output_size(x.shape, output_size, fn)
    check_allocation(fn, (x.shape[:2] + (OH, OW), x.dtype))
    y = memory.empty(x.shape[:2] + (OH, OW), x.dtype)
    if x.shape[0]:
        _pool.adaptive_avg_pool2d(x, y, kernel_threads(x.size))
    return from_channels_first(y, data_format)


def adaptive_avg_pool2d_backward(grad_y: Array, input_shape: Sequence[int], *,
                                 data_format: str = CHANNELS_FIRST) -> Array:
    """Gradient of adaptive_avg_pool2d; the output size is grad_y's, the
    data_format must be the forward's.

    Returns
    -------
    grad_x : ndarray of shape input_shape, dtype of grad_y
    """
    fn = "adaptive_avg_pool2d_backward"
    data_format, grad_y = _layout_in(data_format, fn, grad_y)
    input_shape = shape_to_channels_first(input_shape, data_format)
    grad_y = as_float_array(grad_y, "grad_y", ndim=4, fn=fn)
    shape = input_shape_arg(input_shape, grad_y, fn)
    if grad_y.shape[2] < 1 or grad_y.shape[3] < 1:
        raise ValueError(f"{fn}: grad_y of shape {grad_y.shape} has an empty "
                         "spatial dimension")
    check_allocation(fn, (shape, grad_y.dtype))
    gx = memory.empty(shape, grad_y.dtype)
    if shape[0]:
        _pool.adaptive_avg_pool2d_backward(grad_y, gx, kernel_threads(gx.size))
    return from_channels_first(gx, data_format)
