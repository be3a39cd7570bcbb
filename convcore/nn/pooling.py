"""MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d. Max pooling
caches only the argmax indices and the input shape, average pooling only
the input shape.

Each takes a keyword-only `data_format`: "channels_first" (NCHW, default)
or "channels_last" (NHWC), the layout of its input, output and input
gradient; the functional ops transpose a channels-last array in and out
(the kernels pool NCHW planes), with the same results."""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

from convcore._runtime.grad_mode import is_grad_enabled
from convcore.utils.layout import (
    CHANNELS_FIRST, check_data_format, shape_from_channels_first, shape_to_channels_first)
from convcore.utils.validation import int_pair, output_size
from convcore.functional.pooling import (
    adaptive_avg_pool2d, adaptive_avg_pool2d_backward, adaptive_max_pool2d,
    adaptive_max_pool2d_backward, avg_pool2d, avg_pool2d_backward, max_pool2d,
    max_pool2d_backward)
from convcore.nn._common import data_format_repr, layer_dtype
from convcore.nn.module import Module
from convcore.utils.types import AdaptiveSize, Array, IntOrPair


def _pool_out_shape(layer, input_shape, kernel, stride, padding, dilation, ceil_mode,
                    data_format):
    if len(input_shape) != 4:
        raise ValueError(f"{layer}: input must be 4-D (N, C, H, W), got shape "
                         f"{tuple(input_shape)}")
    n, c, h, w = shape_to_channels_first(input_shape, data_format)
    oh = output_size(h, kernel[0], stride[0], 2 * padding[0], dilation[0], ceil_mode, padding[0])
    ow = output_size(w, kernel[1], stride[1], 2 * padding[1], dilation[1], ceil_mode, padding[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"{layer}: kernel {kernel} does not fit the padded input "
                         f"(input shape {tuple(input_shape)}, padding {padding})")
    return shape_from_channels_first((n, c, oh, ow), data_format)


class MaxPool2d(Module):
    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                 padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
                 dtype: DTypeLike = np.float32, *, data_format: str = CHANNELS_FIRST) -> None:
        super().__init__()
        fn = "MaxPool2d"
        self.data_format = check_data_format(data_format, fn)
        self.kernel_size = int_pair(kernel_size, "kernel_size", 1, fn)
        self.stride = self.kernel_size if stride is None else int_pair(stride, "stride", 1, fn)
        self.padding = int_pair(padding, "padding", 0, fn)
        self.dilation = int_pair(dilation, "dilation", 1, fn)
        self.ceil_mode = bool(ceil_mode)
        layer_dtype(dtype, fn)

    def forward(self, x: Array) -> Array:
        args = (x, self.kernel_size, self.stride, self.padding, self.dilation,
                self.ceil_mode)
        if not is_grad_enabled():
            # Nothing is kept for backward, so no argmax indices either: the
            # kernel finds the same maxima several times faster without them
            # (benchmarks/results/python_overhead.md).
            self._save_for_backward()
            return max_pool2d(*args, data_format=self.data_format)
        y, indices = max_pool2d(*args, return_indices=True, data_format=self.data_format)
        self._save_for_backward(indices, x.shape)
        return y

    def backward(self, grad_y: Array) -> Array:
        indices, shape = self._saved()
        return max_pool2d_backward(grad_y, indices, shape, data_format=self.data_format)

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        return _pool_out_shape("MaxPool2d", input_shape, self.kernel_size, self.stride,
                               self.padding, self.dilation, self.ceil_mode, self.data_format)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode}"
                + data_format_repr(self))


class AvgPool2d(Module):
    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                 padding: IntOrPair = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, dtype: DTypeLike = np.float32, *,
                 data_format: str = CHANNELS_FIRST) -> None:
        super().__init__()
        fn = "AvgPool2d"
        self.data_format = check_data_format(data_format, fn)
        self.kernel_size = int_pair(kernel_size, "kernel_size", 1, fn)
        self.stride = self.kernel_size if stride is None else int_pair(stride, "stride", 1, fn)
        self.padding = int_pair(padding, "padding", 0, fn)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        layer_dtype(dtype, fn)

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                self.count_include_pad)

    def forward(self, x: Array) -> Array:
        y = avg_pool2d(x, *self._args(), data_format=self.data_format)
        self._save_for_backward(x.shape)
        return y

    def backward(self, grad_y: Array) -> Array:
        (shape,) = self._saved()
        return avg_pool2d_backward(grad_y, shape, *self._args(), data_format=self.data_format)

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        return _pool_out_shape("AvgPool2d", input_shape, self.kernel_size, self.stride,
                               self.padding, (1, 1), self.ceil_mode, self.data_format)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}" + data_format_repr(self))


class _AdaptivePool2d(Module):
    """output_size: int, (h, w), with None keeping that input dimension."""

    def __init__(self, output_size: AdaptiveSize, dtype: DTypeLike = np.float32, *,
                 data_format: str = CHANNELS_FIRST) -> None:
        super().__init__()
        name = type(self).__name__
        self.data_format = check_data_format(data_format, name)
        if isinstance(output_size, (tuple, list)):
            if len(output_size) != 2:
                raise ValueError(f"{name}: output_size must be an int or "
                                 f"a pair, got {output_size!r}")
            self.output_size = tuple(None if s is None else int(s) for s in output_size)
        else:
            self.output_size = (int(output_size), int(output_size))
        layer_dtype(dtype, name)

    def _resolved(self, input_shape):
        hw = shape_to_channels_first(input_shape, self.data_format)[2:]
        return tuple(i if o is None else o for o, i in zip(self.output_size, hw))

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        if len(input_shape) != 4:
            raise ValueError(f"{type(self).__name__}: input must be 4-D, got shape "
                             f"{tuple(input_shape)}")
        nchw = shape_to_channels_first(input_shape, self.data_format)
        return shape_from_channels_first(tuple(nchw[:2]) + self._resolved(input_shape),
                                         self.data_format)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}" + data_format_repr(self)


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """Adaptive average pooling, as torch.nn.AdaptiveAvgPool2d."""

    def forward(self, x: Array) -> Array:
        y = adaptive_avg_pool2d(x, self._resolved(x.shape), data_format=self.data_format)
        self._save_for_backward(x.shape)
        return y

    def backward(self, grad_y: Array) -> Array:
        (shape,) = self._saved()
        return adaptive_avg_pool2d_backward(grad_y, shape, data_format=self.data_format)


class AdaptiveMaxPool2d(_AdaptivePool2d):
    """Adaptive max pooling, as torch.nn.AdaptiveMaxPool2d; with
    return_indices=True forward returns (y, indices) (flat h*W + w per
    plane, as F.adaptive_max_pool2d). Caches the argmax and input shape."""

    def __init__(self, output_size: AdaptiveSize, return_indices: bool = False,
                 dtype: DTypeLike = np.float32, *, data_format: str = CHANNELS_FIRST) -> None:
        super().__init__(output_size, dtype, data_format=data_format)
        self.return_indices = bool(return_indices)

    def forward(self, x: Array) -> Union[Array, Tuple[Array, Array]]:
        size = self._resolved(x.shape)
        if not is_grad_enabled() and not self.return_indices:
            self._save_for_backward()  # as MaxPool2d: no argmax when nothing is kept
            return adaptive_max_pool2d(x, size, data_format=self.data_format)
        y, indices = adaptive_max_pool2d(x, size, return_indices=True,
                                         data_format=self.data_format)
        self._save_for_backward(indices, x.shape)
        return (y, indices) if self.return_indices else y

    def backward(self, grad_y: Array) -> Array:
        indices, shape = self._saved()
        return adaptive_max_pool2d_backward(grad_y, indices, shape,
                                            data_format=self.data_format)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", return_indices=True" if self.return_indices else "")
