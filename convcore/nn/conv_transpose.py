"""ConvTranspose2d: parameters and cache around F.conv_transpose2d."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike

from convcore.functional.conv_transpose import (
    conv_transpose2d, conv_transpose2d_backward, conv_transpose_output_shape)
from convcore.nn.conv import conv_parameters
from convcore.nn.module import Module
from convcore.utils.validation import int_pair
from convcore.utils.types import Array, IntOrPair, Seed


class ConvTranspose2d(Module):
    """2-D transposed convolution layer, as torch.nn.ConvTranspose2d: weight
    (in_channels, out_channels/groups, kH, kW), bias (out_channels,),
    initialised as torch does (fan_in from weight.shape[1]).

    Output size per axis: (H - 1) stride - 2 padding + dilation (kH - 1)
    + output_padding + 1. `rng` (Generator, seed or None) draws the initial
    weights; `first_layer = True` on the instance skips the input gradient.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair,
                 stride: IntOrPair = 1, padding: IntOrPair = 0, output_padding: IntOrPair = 0,
                 groups: int = 1, bias: bool = True, dilation: IntOrPair = 1,
                 algorithm: str = "auto", dtype: DTypeLike = np.float32, *,
                 rng: Seed = None) -> None:
        super().__init__()
        fn = "ConvTranspose2d"
        self.stride = int_pair(stride, "stride", 1, fn)
        self.padding = int_pair(padding, "padding", 0, fn)
        self.output_padding = int_pair(output_padding, "output_padding", 0, fn)
        self.dilation = int_pair(dilation, "dilation", 1, fn)
        self.algorithm = algorithm
        conv_parameters(self, fn, in_channels, out_channels, kernel_size, groups, bias, dtype,
                        rng, transposed=True)
        if any(op >= max(s, d) for op, s, d in
               zip(self.output_padding, self.stride, self.dilation)):
            raise ValueError(f"{fn}: output_padding={self.output_padding} must be smaller "
                             f"than stride={self.stride} or dilation={self.dilation}")

    def _geometry(self, output_padding: Optional[Tuple[int, int]] = None
                  ) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int], int,
                             Tuple[int, int]]:
        op = self.output_padding if output_padding is None else output_padding
        return self.stride, self.padding, op, self.groups, self.dilation

    def _output_padding(self, input_shape, output_size):
        """The output_padding that gives `output_size` ((H, W), or the whole
        (N, C, H, W)), as torch's ConvTranspose2d.forward(x, output_size):
        each size must lie between the smallest output and stride - 1 more."""
        if output_size is None:
            return self.output_padding
        size = tuple(output_size)
        if len(size) == 4:
            size = size[2:]
        if len(size) != 2:
            raise ValueError(f"ConvTranspose2d: output_size must be (H, W) or (N, C, H, W), "
                             f"got {output_size!r}")
        smallest = tuple((n - 1) * s - 2 * p + d * (k - 1) + 1 for n, s, p, d, k in
                         zip(input_shape[2:], self.stride, self.padding, self.dilation,
                             self.kernel_size))
        largest = tuple(m + s - 1 for m, s in zip(smallest, self.stride))
        if any(not lo <= n <= hi for n, lo, hi in zip(size, smallest, largest)):
            raise ValueError(f"ConvTranspose2d: requested an output size of {size}, but "
                             f"valid sizes range from {smallest} to {largest} (for an input "
                             f"of spatial size {tuple(input_shape[2:])})")
        return tuple(n - m for n, m in zip(size, smallest))

    def forward(self, x: Array, output_size: Optional[Sequence[int]] = None) -> Array:
        """y for input x; `output_size` ((H, W) or (N, C, H, W)) picks the
        output_padding that gives it, as torch's forward(input, output_size)
        does to undo a strided convolution's rounding."""
        params = self._parameters
        w, b = params["weight"], params.get("bias")
        op = self._output_padding(np.shape(x), output_size)
        y = conv_transpose2d(x, w.data, None if b is None else b.data, *self._geometry(op),
                             self.algorithm, weight_version=w.version)
        self._save_for_backward(x, op)
        return y

    def backward(self, grad_y: Array) -> Optional[Array]:
        x, op = self._saved()
        params = self._parameters
        w, b = params["weight"], params.get("bias")
        gx, gw, gb = conv_transpose2d_backward(
            grad_y, x, w.data, *self._geometry(op), self.algorithm,
            bias=b is not None and b.requires_grad, input_grad=not self.first_layer,
            weight_grad=w.requires_grad, weight_version=w.version)
        w.accumulate_grad(gw)
        if b is not None:
            b.accumulate_grad(gb)
        return gx

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        if len(input_shape) != 4:
            raise ValueError(f"ConvTranspose2d: input must be 4-D (N, C, H, W), got shape "
                             f"{tuple(input_shape)}")
        return conv_transpose_output_shape(input_shape, self.weight.shape, *self._geometry(),
                                           fn="ConvTranspose2d")

    def macs(self, input_shape: Tuple[int, ...], output_shape: Tuple[int, ...]) -> int:
        # Each input pixel meets every tap of its group's kernels once.
        kh, kw = self.kernel_size
        return int(np.prod(input_shape)) * (self.out_channels // self.groups) * kh * kw

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        for name, default in (("padding", (0, 0)), ("output_padding", (0, 0)),
                              ("dilation", (1, 1))):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s
