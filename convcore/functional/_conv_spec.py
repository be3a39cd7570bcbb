"""The checked geometry of one convolution: every rule about conv
arguments lives in conv_spec(), which forward and both backwards share."""
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from convcore._kernels.conv_geometry import ConvGeometry
from convcore.utils.layout import CHANNELS_FIRST, layout_hint, shape_from_channels_first
from convcore.utils.validation import check_int, int_pair, output_size

# GEMM dimensions go to an LP64 BLAS as C ints.
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class ConvSpec:
    """Shapes and parameters of a checked 2-D convolution (NCHW).

    The derived values below are computed once per spec (cached_property
    writes the instance dict, which a frozen dataclass allows): a spec is
    reused across calls of the same shape (functional.conv's plan cache),
    and each call reads them several times."""
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    OH: int
    OW: int
    stride: tuple
    padding: tuple          # (top, left); bottom/right follow from OH/OW
    padding_total: tuple    # (top + bottom, left + right)
    dilation: tuple
    groups: int
    dtype: np.dtype

    @cached_property
    def Cg(self):
        return self.C // self.groups

    @cached_property
    def Kg(self):
        return self.K // self.groups

    @cached_property
    def out_shape(self):
        return (self.N, self.K, self.OH, self.OW)

    @cached_property
    def params(self):
        """The ConvGeometry (a ConvParams struct) every conv driver takes,
        built once per spec."""
        return ConvGeometry(self.N, self.C, self.H, self.W, self.K, self.R, self.S,
                            self.OH, self.OW, *self.stride, *self.padding,
                            *self.dilation, self.groups)

    @property
    def is_depthwise(self):
        return self.groups > 1 and self.Cg == 1

    @property
    def is_pointwise(self):
        """1x1, stride 1, no padding: im2col is the identity."""
        return (self.R == 1 and self.S == 1 and self.stride == (1, 1)
                and self.padding_total == (0, 0))

    @cached_property
    def _flops(self):
        return 2 * self.N * self.K * self.OH * self.OW * self.Cg * self.R * self.S

    def flops(self):
        """Multiply-adds x 2 of the forward pass."""
        return self._flops


def _resolve_padding(padding, kernel, stride, dilation, fn):
    """-> ((top, left), (total_h, total_w)). 'same' splits an odd total with
    the extra row/column at the bottom/right, as PyTorch does."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), (0, 0)
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"{fn}: padding='same' needs stride 1, got stride={stride}")
            totals = tuple(d * (k - 1) for k, d in zip(kernel, dilation))
            return tuple(t // 2 for t in totals), totals
        raise ValueError(
            f"{fn}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    pad = int_pair(padding, "padding", 0, fn)
    return pad, (2 * pad[0], 2 * pad[1])


def conv_spec(x_shape, w_shape, dtype, stride, padding, dilation, groups,
              fn="conv2d", data_format=CHANNELS_FIRST):
    """Check conv arguments against the (N, C, H, W) input and weight
    shapes; -> ConvSpec. data_format is the caller's layout (the input
    was transposed to NCHW from it): a channel-count error shows the
    input's shape as the caller gave it, and says when the other layout
    would fit."""
    N, C, H, W = x_shape
    K, Cw, R, S = w_shape
    stride = int_pair(stride, "stride", 1, fn)
    dilation = int_pair(dilation, "dilation", 1, fn)
    groups = check_int(groups, "groups", 1, fn)
    if C < 1 or H < 1 or W < 1:
        raise ValueError(f"{fn}: input of shape {tuple(x_shape)} has an empty "
                         "channel or spatial dimension")
    if K < 1 or R < 1 or S < 1:
        raise ValueError(f"{fn}: weight of shape {tuple(w_shape)} has an empty dimension")
    if C % groups:
        raise ValueError(f"{fn}: groups={groups} does not divide the input's "
                         f"{C} channels (input shape {tuple(x_shape)})")
    if K % groups:
        raise ValueError(f"{fn}: groups={groups} does not divide the weight's "
                         f"{K} output channels (weight shape {tuple(w_shape)})")
    if Cw != C // groups:
        given = shape_from_channels_first(x_shape, data_format)
        raise ValueError(
            f"{fn}: weight shape {tuple(w_shape)} expects {Cw * groups} input "
            f"channels with groups={groups}, but input shape {given} "
            f"has {C} (weight.shape[1] must be in_channels/groups = {C // groups})"
            + layout_hint(given, Cw * groups, data_format))
    pad, pad_total = _resolve_padding(padding, (R, S), stride, dilation, fn)
    OH = output_size(H, R, stride[0], pad_total[0], dilation[0])
    OW = output_size(W, S, stride[1], pad_total[1], dilation[1])
    if OH < 1 or OW < 1:
        eff = (dilation[0] * (R - 1) + 1, dilation[1] * (S - 1) + 1)
        raise ValueError(
            f"{fn}: kernel {R}x{S} (dilated extent {eff[0]}x{eff[1]}) is larger "
            f"than the padded input {H + pad_total[0]}x{W + pad_total[1]} "
            f"(input shape {tuple(x_shape)}, weight shape {tuple(w_shape)}, "
            f"padding={padding!r})")
    spec = ConvSpec(N, C, H, W, K, R, S, OH, OW, stride, pad, pad_total,
                    dilation, groups, np.dtype(dtype))
    # The BLAS takes C ints: refuse sizes it cannot address before any
    # allocation rather than letting an index wrap around.
    for what, size in (("out_channels/groups", spec.Kg),
                       ("in_channels/groups x kernel", spec.Cg * R * S),
                       ("output pixels", OH * OW),
                       ("input pixels", H * W)):
        if size > _INT32_MAX:
            raise ValueError(f"{fn}: {what} = {size} exceeds 2**31-1, which "
                             f"the BLAS cannot index (input {tuple(x_shape)}, "
                             f"weight {tuple(w_shape)})")
    return spec
