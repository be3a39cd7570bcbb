"""The checked geometry of one 2-D pooling: every rule about pooling
arguments lives in pool_spec(), which the forward and the backward share
(PyTorch's pool2d_shape_check), plus the shape checks of the backwards."""
from dataclasses import dataclass


from convcore.utils.validation import check_flag, check_int, int_pair, output_size


@dataclass(frozen=True)
class PoolSpec:
    """Shapes and window parameters of a checked 2-D pooling (NCHW)."""
    N: int
    C: int
    H: int
    W: int
    OH: int
    OW: int
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple

    @property
    def out_shape(self):
        return (self.N, self.C, self.OH, self.OW)

    @property
    def geom(self):
        """The tuple the pool kernel drivers take."""
        return (self.kernel + self.stride + self.padding + self.dilation)


def _spatial_check(shape, fn, name="input"):
    if shape[1] < 1 or shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"{fn}: {name} of shape {tuple(shape)} has an empty "
                         "channel or spatial dimension")


def pool_spec(x_shape, kernel_size, stride, padding, dilation, ceil_mode, fn):
    """Check pooling arguments against an (N, C, H, W) input; -> PoolSpec.
    stride None means stride = kernel_size (PyTorch's default)."""
    N, C, H, W = x_shape
    kernel = int_pair(kernel_size, "kernel_size", 1, fn)
    stride = kernel if stride is None else int_pair(stride, "stride", 1, fn)
    padding = int_pair(padding, "padding", 0, fn)
    dilation = int_pair(dilation, "dilation", 1, fn)
    ceil_mode = check_flag(ceil_mode, "ceil_mode", fn)
    _spatial_check(x_shape, fn)
    # PyTorch's rule: a window must always see some of the input.
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(
            f"{fn}: padding={padding} must be at most half of kernel_size="
            f"{kernel} (input shape {tuple(x_shape)})")
    OH = output_size(H, kernel[0], stride[0], 2 * padding[0], dilation[0], ceil_mode)
    OW = output_size(W, kernel[1], stride[1], 2 * padding[1], dilation[1], ceil_mode)
    if OH < 1 or OW < 1:
        eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        raise ValueError(
            f"{fn}: kernel_size={kernel} (dilated extent {eff[0]}x{eff[1]}) is "
            f"larger than the padded input {H + 2 * padding[0]}x"
            f"{W + 2 * padding[1]} (input shape {tuple(x_shape)}, "
            f"padding={padding}, dilation={dilation})")
    return PoolSpec(N, C, H, W, OH, OW, kernel, stride, padding, dilation)


def adaptive_output_size(x_shape, output_size_arg, fn):
    """int, (h, w), or a pair with None for 'keep the input size' -> (OH, OW)."""
    _spatial_check(x_shape, fn)
    if isinstance(output_size_arg, (tuple, list)):
        if len(output_size_arg) != 2:
            raise ValueError(f"{fn}: output_size must be an int or a pair "
                             f"(h, w), got {output_size_arg!r}")
        return tuple(
            size if v is None else check_int(v, "output_size", 1, fn)
            for v, size in zip(output_size_arg, x_shape[2:]))
    v = check_int(output_size_arg, "output_size", 1, fn)
    return (v, v)


def input_shape_arg(input_shape, grad_y, fn):
    """Check a backward's input_shape (N, C, H, W) against grad_y's batch and
    channels; -> tuple of ints."""
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 4:
        raise ValueError(f"{fn}: input_shape must be a 4-tuple (N, C, H, W), "
                         f"got {input_shape!r}")
    shape = tuple(check_int(v, "input_shape", 0, fn) for v in input_shape)
    _spatial_check(shape, fn, "input_shape")
    if shape[:2] != grad_y.shape[:2]:
        raise ValueError(f"{fn}: grad_y of shape {grad_y.shape} does not match "
                         f"input_shape {shape} in batch and channels")
    return shape
