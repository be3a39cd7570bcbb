"""conv_transpose2d and its backward, built on the convolution kernels.

A transposed convolution is the adjoint of a convolution: with weight w
of shape (C_in, C_out/groups, kH, kW), read as the weight of a convolution
from C_out to C_in channels,

    conv_transpose2d(x, w)        = conv2d_backward's grad_x for grad_y = x
    grad of its input             = conv2d(grad_y, w)
    grad of its weight            = conv2d_backward's grad_w with the roles
                                    of input and output gradient swapped

so every algorithm (direct, im2col, winograd, auto) serves it unchanged.
output_padding adds rows/columns at the bottom/right that only the bias
(and the trailing taps of a dilated kernel) reach; when it is not smaller
than the stride the adjoint convolution has more output rows than x, and x
is zero-extended to match (torch allows output_padding < max(stride,
dilation)).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from convcore._kernels.conv_direct import bias_grad
from convcore._runtime.threads import kernel_threads
from convcore.algorithms import get_algorithm
from convcore.functional._conv_spec import conv_spec
from convcore.functional.conv import _EMPTY, _check_memory, conv2d, conv2d_backward
from convcore.utils.validation import (
    as_float_array, check_allocation, check_flag, check_int, int_pair)
from convcore.utils.types import Array, IntOrPair


def conv_transpose_output_shape(x_shape: Sequence[int], w_shape: Sequence[int],
                                stride: IntOrPair, padding: IntOrPair,
                                output_padding: IntOrPair, groups: int, dilation: IntOrPair,
                                fn: str = "conv_transpose2d") -> Tuple[int, int, int, int]:
    """(N, C_out, H_out, W_out) of a transposed convolution, checked:

        H_out = (H - 1) stride - 2 padding + dilation (kH - 1) + output_padding + 1
    """
    N, C, H, W = x_shape
    Cw, Kg, R, S = w_shape
    stride = int_pair(stride, "stride", 1, fn)
    padding = int_pair(padding, "padding", 0, fn)
    output_padding = int_pair(output_padding, "output_padding", 0, fn)
    dilation = int_pair(dilation, "dilation", 1, fn)
    groups = check_int(groups, "groups", 1, fn)
    if C != Cw:
        raise ValueError(f"{fn}: weight of shape {tuple(w_shape)} expects {Cw} input "
                         f"channels (weight.shape[0]), but input of shape "
                         f"{tuple(x_shape)} has {C}")
    if C % groups:
        raise ValueError(f"{fn}: groups={groups} does not divide the input's {C} "
                         f"channels (input shape {tuple(x_shape)})")
    for axis, op in enumerate(output_padding):
        if op >= max(stride[axis], dilation[axis]):
            raise ValueError(
                f"{fn}: output_padding={output_padding} must be smaller than "
                f"stride={stride} or dilation={dilation} in each dimension")
    out = tuple((size - 1) * s - 2 * p + d * (k - 1) + op + 1 for size, s, p, d, k, op in
                zip((H, W), stride, padding, dilation, (R, S), output_padding))
    if min(out) < 1 or min(R, S, Kg) < 1:
        raise ValueError(f"{fn}: input {tuple(x_shape)} with weight {tuple(w_shape)}, "
                         f"stride={stride}, padding={padding}, dilation={dilation} and "
                         f"output_padding={output_padding} gives an empty output "
                         f"{out[0]}x{out[1]}")
    return (N, Kg * groups) + out


def _adjoint(x, weight, stride, padding, output_padding, groups, dilation, fn):
    """(out_shape, spec): the output shape of the transposed convolution
    and the ConvSpec of the convolution it is the adjoint of (from the
    transposed output back to x's channels)."""
    out_shape = conv_transpose_output_shape(x.shape, weight.shape, stride, padding,
                                            output_padding, groups, dilation, fn)
    spec = conv_spec(out_shape, weight.shape, x.dtype, stride, padding, dilation,
                     groups, fn)
    return out_shape, spec


def _extended(x, spec):
    """x zero-extended at the bottom/right to the adjoint convolution's
    output size (only when output_padding >= stride; see the module doc)."""
    OH, OW = spec.OH, spec.OW
    if x.shape[2:] == (OH, OW):
        return x
    return np.pad(x, ((0, 0), (0, 0), (0, OH - x.shape[2]), (0, OW - x.shape[3])))


def _checked(x, weight, bias, fn):
    x = as_float_array(x, "input", ndim=4, fn=fn)
    weight = as_float_array(weight, "weight", ndim=4, dtype=x.dtype, fn=fn)
    if bias is not None:
        bias = as_float_array(bias, "bias", ndim=1, dtype=x.dtype, fn=fn)
    return x, weight, bias


def conv_transpose2d(x: Array, weight: Array, bias: Optional[Array] = None,
                     stride: IntOrPair = 1, padding: IntOrPair = 0,
                     output_padding: IntOrPair = 0, groups: int = 1, dilation: IntOrPair = 1,
                     algorithm: str = "auto", *, weight_version: Optional[int] = None
                     ) -> Array:
    """2-D transposed convolution, NCHW, as torch.nn.functional.conv_transpose2d
    (same argument order).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W), float32 or float64
    weight : ndarray of shape (C_in, C_out/groups, kH, kW), same dtype as x
    bias : ndarray of shape (C_out,) or None
    stride, dilation : int or (h, w), >= 1
    padding : int or (h, w) >= 0, removed from each side of the output
    output_padding : int or (h, w), added to the bottom/right of the
        output; smaller than stride or dilation
    groups : int dividing C_in and C_out
    algorithm : one of convcore.conv_algorithms(), as in conv2d
    weight_version : keyword-only, as in conv2d

    Returns
    -------
    y : ndarray of shape (N, C_out, H_out, W_out), dtype of x, with
        H_out = (H - 1) stride - 2 padding + dilation (kH - 1) + output_padding + 1
    """
    fn = "conv_transpose2d"
    x, weight, bias = _checked(x, weight, bias, fn)
    out_shape, spec = _adjoint(x, weight, stride, padding, output_padding, groups,
                               dilation, fn)
    if bias is not None and bias.shape != (out_shape[1],):
        raise ValueError(f"{fn}: bias must have shape ({out_shape[1]},) to match weight "
                         f"shape {weight.shape} and groups={spec.groups}, got {bias.shape}")
    algo = get_algorithm(algorithm, spec, fn)
    _check_memory(algo, spec, fn, [out_shape], backward=True)
    y = np.empty(out_shape, dtype=x.dtype)
    if spec.N:
        # The adjoint's backward-data pass. Its `x` argument is only read
        # for the weight gradient, which is not asked for; y stands in for
        # it, having the shape the kernels check.
        algo.backward(_extended(x, spec), y, weight, y, _EMPTY[x.dtype][1], True, False,
                      spec, weight_version)
    if bias is not None:
        y += bias[:, None, None]
    return y


def conv_transpose2d_backward(grad_y: Array, x: Array, weight: Array, stride: IntOrPair = 1,
                              padding: IntOrPair = 0, output_padding: IntOrPair = 0,
                              groups: int = 1, dilation: IntOrPair = 1, algorithm: str = "auto",
                              bias: bool = True, *, input_grad: bool = True,
                              weight_grad: bool = True, weight_version: Optional[int] = None
                              ) -> Tuple[Optional[Array], Optional[Array], Optional[Array]]:
    """Gradients of conv_transpose2d with respect to its input, weight and
    bias; the arguments after weight must be the forward's.

    Parameters
    ----------
    grad_y : ndarray of shape (N, C_out, H_out, W_out)
    x, weight : the forward's input and weight
    bias : bool, whether to return grad_b (None otherwise)
    input_grad, weight_grad : bool, keyword-only; a gradient not asked for
        is not computed and returned as None

    Returns
    -------
    (grad_x, grad_w, grad_b) with the shapes of x, weight and (C_out,)
    """
    fn = "conv_transpose2d_backward"
    bias = check_flag(bias, "bias", fn)
    input_grad = check_flag(input_grad, "input_grad", fn)
    weight_grad = check_flag(weight_grad, "weight_grad", fn)
    x, weight, _ = _checked(x, weight, None, fn)
    out_shape, spec = _adjoint(x, weight, stride, padding, output_padding, groups,
                               dilation, fn)
    grad_y = as_float_array(grad_y, "grad_y", ndim=4, dtype=x.dtype, fn=fn)
    if grad_y.shape != out_shape:
        raise ValueError(f"{fn}: grad_y has shape {grad_y.shape} but the transposed "
                         f"convolution of input {x.shape} with weight {weight.shape} "
                         f"gives {out_shape}")
    geometry = (spec.stride, spec.padding, spec.dilation, spec.groups)
    check_allocation(fn, (x.shape if input_grad else 0, x.dtype),
                     (weight.shape if weight_grad else 0, x.dtype))
    gx = gw = gb = None
    if input_grad:
        gx = conv2d(grad_y, weight, None, *geometry, algorithm,
                    weight_version=weight_version)
        if gx.shape != x.shape:  # output_padding >= stride: drop the extension
            gx = np.ascontiguousarray(gx[:, :, :x.shape[2], :x.shape[3]])
    if weight_grad:
        _, gw, _ = conv2d_backward(_extended(x, spec), grad_y, weight, *geometry,
                                   algorithm, bias=False, input_grad=False)
    if bias:
        gb = np.empty(out_shape[1], dtype=x.dtype)
        if spec.N:
            bias_grad(grad_y, gb, kernel_threads(grad_y.size))
        else:
            gb[...] = 0
    return gx, gw, gb
