"""Conv2d: parameters and cache around F.conv2d / F.conv2d_backward."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

from convcore import init
from convcore.functional import conv2d, conv2d_backward
from convcore.functional._conv_spec import conv_spec
from convcore.utils.layout import (
    CHANNELS_FIRST, check_data_format, refuse_other_layout, shape_from_channels_first,
    shape_to_channels_first)
from convcore.utils.validation import check_int, int_pair
from convcore.nn._common import data_format_repr, layer_dtype
from convcore.nn.module import Module
from convcore.nn.parameter import Parameter
from convcore.utils.types import Array, IntOrPair, Seed


class Conv2d(Module):
    """2-D convolution layer, as torch.nn.Conv2d (weight (out, in/groups,
    kH, kW), bias (out,)), initialised as torch does.

    `rng` (Generator, seed or None) draws the initial weights. Set
    `first_layer = True` on the instance to skip the input gradient that a
    network's first layer does not need (backward then returns None).

    `data_format` (keyword-only): "channels_first" (NCHW, default) or
    "channels_last" (NHWC; aliases "NCHW", "NHWC"). Input, output and
    input gradient are in that layout; the parameters and state_dict are
    the same in both, so a state dict moves between them. The kernels are
    NCHW: a channels-last layer transposes in and out (views, see
    convcore.utils.layout), with the same results as the NCHW layer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair,
                 stride: IntOrPair = 1, padding: Union[IntOrPair, str] = 0,
                 dilation: IntOrPair = 1, groups: int = 1, bias: bool = True,
                 algorithm: str = "auto", dtype: DTypeLike = np.float32, *,
                 rng: Seed = None, data_format: str = CHANNELS_FIRST) -> None:
        super().__init__()
        fn = "Conv2d"
        self.data_format = check_data_format(data_format, fn)
        self.stride = int_pair(stride, "stride", 1, fn)
        self.padding = padding if isinstance(padding, str) else int_pair(padding, "padding", 0, fn)
        self.dilation = int_pair(dilation, "dilation", 1, fn)
        self.algorithm = algorithm
        conv_parameters(self, fn, in_channels, out_channels, kernel_size, groups, bias, dtype,
                        rng, transposed=False)

    def _geometry(self) -> Tuple[Tuple[int, int], Union[Tuple[int, int], str],
                                 Tuple[int, int], int]:
        return self.stride, self.padding, self.dilation, self.groups

    # forward and backward read the parameters from _parameters rather than
    # through Module.__getattr__ (a failed attribute lookup first): they run
    # once per layer and call.
    def forward(self, x: Array) -> Array:
        refuse_other_layout(x, self.in_channels, self.data_format, "Conv2d")
        params = self._parameters
        b = params.get("bias")
        w = params["weight"]
        y = conv2d(x, w.data, None if b is None else b.data,
                   self.stride, self.padding, self.dilation, self.groups, self.algorithm,
                   weight_version=w.version, data_format=self.data_format)
        self._save_for_backward(x)
        return y

    def backward(self, grad_y: Array) -> Optional[Array]:
        (x,) = self._saved()
        params = self._parameters
        w, b = params["weight"], params.get("bias")
        gx, gw, gb = conv2d_backward(
            grad_y, x, w.data, *self._geometry(), algorithm=self.algorithm,
            bias=b is not None and b.requires_grad,
            input_grad=self._input_grad_needed(), weight_grad=w.requires_grad,
            weight_version=w.version, data_format=self.data_format)
        w.accumulate_grad(gw, owned=True)
        if b is not None:
            b.accumulate_grad(gb, owned=True)
        return gx

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        if len(input_shape) != 4:
            raise ValueError(f"Conv2d: input must be 4-D (N, C, H, W), got shape "
                             f"{tuple(input_shape)}")
        nchw = shape_to_channels_first(input_shape, self.data_format)
        spec = conv_spec(nchw, self.weight.shape, self.weight.dtype, *self._geometry(),
                         fn="Conv2d", data_format=self.data_format)
        return shape_from_channels_first(spec.out_shape, self.data_format)

    def macs(self, input_shape: Tuple[int, ...], output_shape: Tuple[int, ...]) -> int:
        kh, kw = self.kernel_size
        return int(np.prod(output_shape)) * (self.in_channels // self.groups) * kh * kw

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s + data_format_repr(self)


def conv_parameters(layer: Module, fn: str, in_channels: int, out_channels: int,
                    kernel_size: IntOrPair, groups: int, bias: bool, dtype: DTypeLike,
                    rng: Seed, transposed: bool) -> None:
    """Check and set a convolution layer's channels, kernel size and groups,
    and make its weight and bias, initialised as torch does: weight
    (out, in/groups, kH, kW), or (in, out/groups, kH, kW) when transposed."""
    layer.in_channels = check_int(in_channels, "in_channels", 1, fn)
    layer.out_channels = check_int(out_channels, "out_channels", 1, fn)
    layer.kernel_size = int_pair(kernel_size, "kernel_size", 1, fn)
    layer.groups = check_int(groups, "groups", 1, fn)
    if layer.in_channels % layer.groups or layer.out_channels % layer.groups:
        raise ValueError(f"{fn}: groups={layer.groups} must divide in_channels="
                         f"{layer.in_channels} and out_channels={layer.out_channels}")
    dt = layer_dtype(dtype, fn)
    rows, cols = ((layer.in_channels, layer.out_channels) if transposed
                  else (layer.out_channels, layer.in_channels))
    layer.weight = Parameter(np.zeros((rows, cols // layer.groups) + layer.kernel_size,
                                      dtype=dt))
    if bias:
        layer.bias = Parameter(np.zeros(layer.out_channels, dtype=dt))
    else:
        layer.register_parameter("bias", None)
    init.default_layer_init_(layer.weight, layer.bias, rng)
