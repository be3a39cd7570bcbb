"""conv2d and conv2d_backward: checks, output allocation, dispatch."""
import numpy as np

from convcore._kernels.conv_direct import bias_grad
from convcore._threads import kernel_threads
from convcore.algorithms import get_algorithm
from convcore.functional._conv_spec import conv_spec
from convcore.functional._validation import (
    as_float_array, check_allocation, check_flag)


def _checked_inputs(x, weight, stride, padding, dilation, groups, fn):
    x = as_float_array(x, "input", ndim=4, fn=fn)
    weight = as_float_array(weight, "weight", ndim=4, dtype=x.dtype, fn=fn)
    spec = conv_spec(x.shape, weight.shape, x.dtype, stride, padding,
                     dilation, groups, fn)
    return x, weight, spec


def _check_memory(algo, spec, fn, outputs, backward=False):
    """Refuse before allocating when the outputs plus the algorithm's
    scratch cannot be indexed or held (each algorithm counts its scratch in
    exact Python ints: ConvAlgorithm.scratch_bytes)."""
    scratch = algo.scratch_bytes(spec, backward) // spec.dtype.itemsize
    return check_allocation(fn, *[(shape, spec.dtype) for shape in outputs],
                            (scratch, spec.dtype))


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           algorithm="auto"):
    """2-D cross-correlation, NCHW, as torch.nn.functional.conv2d.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    weight : ndarray of shape (K, C/groups, R, S), same dtype as x
    bias : ndarray of shape (K,) or None
    stride, dilation : int or (h, w), >= 1
    padding : int or (h, w) >= 0, or "same" (stride 1 only) or "valid"
    groups : int dividing C and K
    algorithm : one of convcore.conv_algorithms()

    Returns
    -------
    y : ndarray of shape (N, K, OH, OW), dtype of x
    """
    fn = "conv2d"
    x, weight, spec = _checked_inputs(x, weight, stride, padding, dilation, groups, fn)
    if bias is None:
        b = np.empty(0, dtype=x.dtype)
    else:
        b = as_float_array(bias, "bias", ndim=1, dtype=x.dtype, fn=fn)
        if b.shape != (spec.K,):
            raise ValueError(f"{fn}: bias must have shape ({spec.K},) to match "
                             f"weight shape {weight.shape}, got {b.shape}")
    algo = get_algorithm(algorithm, spec, fn)
    _check_memory(algo, spec, fn, [spec.out_shape])
    y = np.empty(spec.out_shape, dtype=x.dtype)
    if spec.N:  # an empty batch has nothing to compute
        algo.forward(x, weight, b, y, spec)
    return y


def conv2d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1,
                    groups=1, algorithm="auto", bias=True, *,
                    input_grad=True, weight_grad=True):
    """Gradients of conv2d with respect to its input, weight and bias.

    Parameters
    ----------
    grad_y : ndarray of shape (N, K, OH, OW), the gradient of the output
    x, weight, stride, padding, dilation, groups, algorithm : as in conv2d
    bias : bool, whether to return grad_b (None otherwise)
    input_grad, weight_grad : bool, keyword-only; a gradient not asked for
        is not computed and returned as None (e.g. a network's first layer
        needs no grad_x)

    Returns
    -------
    (grad_x, grad_w, grad_b) with the shapes of x, weight and (K,)
    """
    fn = "conv2d_backward"
    bias = check_flag(bias, "bias", fn)
    input_grad = check_flag(input_grad, "input_grad", fn)
    weight_grad = check_flag(weight_grad, "weight_grad", fn)
    x, weight, spec = _checked_inputs(x, weight, stride, padding, dilation, groups, fn)
    grad_y = as_float_array(grad_y, "grad_y", ndim=4, dtype=x.dtype, fn=fn)
    if grad_y.shape != spec.out_shape:
        raise ValueError(
            f"{fn}: grad_y has shape {grad_y.shape} but the convolution of input "
            f"{x.shape} with weight {weight.shape} gives {spec.out_shape}")
    algo = get_algorithm(algorithm, spec, fn)
    _check_memory(algo, spec, fn, [x.shape, weight.shape], backward=True)
    gx = np.empty(x.shape, dtype=x.dtype) if input_grad else None
    gw = np.empty(weight.shape, dtype=x.dtype) if weight_grad else None
    gb = np.empty(spec.K, dtype=x.dtype) if bias else None
    if spec.N == 0:  # empty batch: zero gradients, nothing to run
        for g in (gx, gw, gb):
            if g is not None:
                g[...] = 0
        return gx, gw, gb
    if input_grad or weight_grad:
        empty = np.empty((0, 0, 0, 0), dtype=x.dtype)
        algo.backward(grad_y, x, weight,
                      gx if input_grad else empty, gw if weight_grad else empty,
                      input_grad, weight_grad, spec)
    if bias:
        # One bias-gradient kernel serves every algorithm.
        bias_grad(grad_y, gb, kernel_threads(grad_y.size))
    return gx, gw, gb
