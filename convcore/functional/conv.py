"""conv2d and conv2d_backward: checks, output allocation, dispatch.

A call's checks split in two. Those that depend only on the shapes,
dtypes and geometry (conv_spec, the algorithm's support, the memory
bound) give the same answer for every call with the same arguments, so
their result is kept in a plan cache keyed by exactly those arguments;
repeated calls of the same shape (every layer of a network, every step)
skip them. Those that depend on the arrays themselves (that they are
ndarrays, C-contiguous; bias and grad_y matching the plan) run on every
call; anything unexpected takes the full path, which raises the usual
errors.

    conv2d(x, w, ...) --> _plan_for(key) --hit--> _Plan(spec, algo, memory checked)
                               | miss: as_float_array, conv_spec, get_algorithm,
                               v       _check_memory, then stored
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple, Union

import numpy as np

from convcore._kernels.conv_direct import bias_grad
from convcore._runtime import memory
from convcore._runtime.grad_mode import is_grad_enabled
from convcore._runtime.threads import get_num_threads, kernel_threads
from convcore.algorithms import autotune, get_algorithm
from convcore.functional._conv_spec import conv_spec
from convcore.utils import validation as _validation
from convcore.utils.layout import (
    CHANNELS_FIRST, check_data_format, from_channels_first, to_channels_first)
from convcore.utils.validation import (
    as_float_array, check_allocation, check_flag, exact_geometry)
from convcore.utils.types import Array, IntOrPair


def _checked_inputs(x, weight, stride, padding, dilation, groups, fn, data_format):
    x = as_float_array(x, "input", ndim=4, fn=fn)
    weight = as_float_array(weight, "weight", ndim=4, dtype=x.dtype, fn=fn)
    spec = conv_spec(x.shape, weight.shape, x.dtype, stride, padding,
                     dilation, groups, fn, data_format)
    return x, weight, spec


def _check_memory(algo, spec, fn, outputs, backward=False):
    """Refuse before allocating when the outputs plus the algorithm's
    scratch cannot be indexed or held (each algorithm counts its scratch in
    exact Python ints: ConvAlgorithm.scratch_bytes)."""
    scratch = algo.scratch_bytes(spec, backward) // spec.dtype.itemsize
    return check_allocation(fn, *[(shape, spec.dtype) for shape in outputs],
                            (scratch, spec.dtype))


# -- plan cache ---------------------------------------------------------------
class _Plan:
    """What the checks found for one (shapes, dtypes, geometry, algorithm).

    algo is None until get_algorithm has accepted the name (a call may fail
    on its bias before that); algo_reused likewise, the choice of "auto"
    when the weights are reused (inference, see select_algorithm); both
    hold for algo_threads threads ("auto" weighs them) and are chosen
    again when convcore.set_num_threads changes the count. memory_ok
    holds (algorithm, backward, threads) triples whose
    memory bound passed below the size at which check_allocation consults the
    machine's free memory: below it the verdict depends only on the spec, the
    algorithm and the thread count, so it cannot change."""

    __slots__ = ("spec", "algo", "algo_reused", "algo_threads", "memory_ok")

    def __init__(self, spec):
        self.spec = spec
        self.algo = None
        self.algo_reused = None
        self.algo_threads = None
        self.memory_ok = set()


# Enough for every distinct layer shape of a large network in both dtypes;
# when full it is emptied (a plan costs one full check to rebuild).
_PLAN_CACHE_SIZE = 1024
_plans: Dict[tuple, _Plan] = {}


def _plan_key(x, weight, stride, padding, dilation, groups, algorithm):
    """The cache key of a call, or None when the arguments are not of the
    exact types a key can stand for."""
    if (isinstance(x, np.ndarray) and isinstance(weight, np.ndarray)
            and exact_geometry(stride) and exact_geometry(padding)
            and exact_geometry(dilation)
            and type(groups) is int and type(algorithm) is str):
        return (x.shape, weight.shape, x.dtype, weight.dtype, stride, padding,
                dilation, groups, algorithm)
    return None


def _plan_for(x, weight, stride, padding, dilation, groups, algorithm, fn,
              data_format=CHANNELS_FIRST):
    """(x, weight, plan): x (already channels-first; data_format is the
    caller's layout, for messages) and weight C-contiguous (copies when
    they were not), plan the cached or new _Plan of these arguments.
    Raises as _checked_inputs does."""
    key = _plan_key(x, weight, stride, padding, dilation, groups, algorithm)
    plan = _plans.get(key) if key is not None else None
    if plan is None:
        x, weight, spec = _checked_inputs(x, weight, stride, padding, dilation, groups, fn,
                                          data_format)
        plan = _Plan(spec)
        if key is not None:
            if len(_plans) >= _PLAN_CACHE_SIZE:
                _plans.clear()
            _plans[key] = plan
        return x, weight, plan
    # The key fixed type, shape and dtype; contiguity is the array's own.
    if not x.flags.c_contiguous:
        x = x.copy(order="C")
    if not weight.flags.c_contiguous:
        weight = weight.copy(order="C")
    return x, weight, plan


# `name in os.environ` encodes the key and decodes the value, which costs
# more than the rest of a cached call's checks; the bytes dict behind
# CPython's os.environ answers as any dict does. Anything else (another platform's mapping, os.environ
# replaced) is asked the usual way.
_environ = os.environ
_environ_data = getattr(_environ, "_data", None)
try:
    _AUTOTUNE_KEY = _environ.encodekey(autotune.ENV_ENABLE)
except AttributeError:
    _environ_data = None


def _autotuning():
    """Whether "auto" asks convcore.autotune (its answer may change between
    calls, so it is not cached then)."""
    if (_environ_data is not None and os.environ is _environ
            and _AUTOTUNE_KEY not in _environ_data):
        return False
    return autotune.enabled()


def _planned_algorithm(plan, algorithm, fn, outputs, backward, weights_reused=False):
    """The algorithm of the plan, its memory bound checked (each once per
    plan, algorithm and thread count, see _Plan)."""
    num_threads = get_num_threads()
    if plan.algo_threads != num_threads:  # "auto" weighs the threads
        plan.algo = plan.algo_reused = None
        plan.algo_threads = num_threads
    algo = plan.algo_reused if weights_reused else plan.algo
    tuned = algorithm == "auto" and _autotuning()
    if algo is None or tuned:
        algo = get_algorithm(algorithm, plan.spec, fn, weights_reused)
        if tuned:  # a measured choice, not kept: its memory is checked each time
            _check_memory(algo, plan.spec, fn, outputs, backward)
            return algo
        if weights_reused:
            plan.algo_reused = algo
        else:
            plan.algo = algo
    threads = (algo.name, backward, num_threads)
    if threads not in plan.memory_ok:
        total = _check_memory(algo, plan.spec, fn, outputs, backward)
        if total <= _validation._QUERY_MEMORY_ABOVE:
            plan.memory_ok.add(threads)
    return algo


def _matching(a, dtype, shape):
    """a, C-contiguous, when it is an ndarray of this dtype and shape; None
    otherwise (the caller then runs the full checks, for their messages)."""
    if isinstance(a, np.ndarray) and a.dtype == dtype and a.shape == shape:
        return a if a.flags.c_contiguous else a.copy(order="C")
    return None


# Zero-size placeholders (no bias, a gradient not computed): nothing can be
# written into them, so one per dtype serves every call.
_EMPTY = {np.dtype(t): (np.empty(0, t), np.empty((0, 0, 0, 0), t))
          for t in (np.float32, np.float64)}


def conv2d(x: Array, weight: Array, bias: Optional[Array] = None, stride: IntOrPair = 1,
           padding: Union[IntOrPair, str] = 0, dilation: IntOrPair = 1, groups: int = 1,
           algorithm: str = "auto", *, weight_version: Optional[int] = None,
           data_format: str = CHANNELS_FIRST) -> Array:
    """2-D cross-correlation, as torch.nn.functional.conv2d.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), or (N, H, W, C) with
        data_format="channels_last"; float32 or float64
    weight : ndarray of shape (K, C/groups, R, S) in either data_format,
        same dtype as x
    bias : ndarray of shape (K,) or None
    stride, dilation : int or (h, w), >= 1
    padding : int or (h, w) >= 0, or "same" (stride 1 only) or "valid"
    groups : int dividing C and K
    algorithm : one of convcore.conv_algorithms()
    weight_version : keyword-only, any value that changes whenever the
        values of `weight` change (the layers pass Parameter.version), or
        None. With it, what an algorithm derives from the weights
        (Winograd's transformed weights) is reused by later calls with
        the same weight array and version.
    data_format : keyword-only, "channels_first" (NCHW, default) or
        "channels_last" (NHWC); aliases "NCHW", "NHWC". The kernels compute
        in NCHW: a channels-last input is transposed in and the result
        transposed out (views; see convcore.utils.layout).

    Returns
    -------
    y : ndarray of shape (N, K, OH, OW), or (N, OH, OW, K) with
        channels_last; dtype of x
    """
    fn = "conv2d"
    if data_format is not CHANNELS_FIRST:
        data_format = check_data_format(data_format, fn)
        x = to_channels_first(x, data_format)
    x, weight, plan = _plan_for(x, weight, stride, padding, dilation, groups, algorithm, fn,
                                data_format)
    spec = plan.spec
    if bias is None:
        b = _EMPTY[x.dtype][0]
    else:
        b = _matching(bias, x.dtype, (spec.K,))
        if b is None:
            b = as_float_array(bias, "bias", ndim=1, dtype=x.dtype, fn=fn)
            if b.shape != (spec.K,):
                raise ValueError(f"{fn}: bias must have shape ({spec.K},) to match "
                                 f"weight shape {weight.shape}, got {b.shape}")
    # Inference through a layer (a weight version, no gradients): the same
    # weights come again, so "auto" may count on derived weights staying cached.
    reused = weight_version is not None and not is_grad_enabled()
    algo = _planned_algorithm(plan, algorithm, fn, [spec.out_shape], False, reused)
    y = memory.empty(spec.out_shape, x.dtype)
    if spec.N:  # an empty batch has nothing to compute
        algo.forward(x, weight, b, y, spec, weight_version)
    return from_channels_first(y, data_format)


def conv2d_backward(grad_y: Array, x: Array, weight: Array, stride: IntOrPair = 1,
                    padding: Union[IntOrPair, str] = 0, dilation: IntOrPair = 1,
                    groups: int = 1, algorithm: str = "auto", bias: bool = True, *,
                    input_grad: bool = True, weight_grad: bool = True,
                    weight_version: Optional[int] = None, data_format: str = CHANNELS_FIRST
                    ) -> Tuple[Optional[Array], Optional[Array], Optional[Array]]:
    """Gradients of conv2d with respect to its input, weight and bias.

    Parameters
    ----------
    grad_y : ndarray of the output's shape, (N, K, OH, OW) or, with
        channels_last, (N, OH, OW, K): the gradient of the output
    x, weight, stride, padding, dilation, groups, algorithm : as in conv2d
    bias : bool, whether to return grad_b (None otherwise)
    input_grad, weight_grad : bool, keyword-only; a gradient not asked for
        is not computed and returned as None (e.g. a network's first layer
        needs no grad_x)
    weight_version, data_format : keyword-only, as in conv2d

    Returns
    -------
    (grad_x, grad_w, grad_b) with the shapes of x (in its data_format),
    weight and (K,)
    """
    fn = "conv2d_backward"
    if data_format is not CHANNELS_FIRST:
        data_format = check_data_format(data_format, fn)
        x = to_channels_first(x, data_format)
        grad_y = to_channels_first(grad_y, data_format)
    bias = check_flag(bias, "bias", fn)
    input_grad = check_flag(input_grad, "input_grad", fn)
    weight_grad = check_flag(weight_grad, "weight_grad", fn)
    x, weight, plan = _plan_for(x, weight, stride, padding, dilation, groups, algorithm, fn,
                                data_format)
    spec = plan.spec
    g = _matching(grad_y, x.dtype, spec.out_shape)
    if g is None:
        g = as_float_array(grad_y, "grad_y", ndim=4, dtype=x.dtype, fn=fn)
        if g.shape != spec.out_shape:
            raise ValueError(
                f"{fn}: grad_y has shape {g.shape} but the convolution of input "
                f"{x.shape} with weight {weight.shape} gives {spec.out_shape}")
    grad_y = g
    algo = _planned_algorithm(plan, algorithm, fn, [x.shape, weight.shape], True)
    gx = memory.empty(x.shape, x.dtype) if input_grad else None
    gw = np.empty(weight.shape, dtype=x.dtype) if weight_grad else None
    gb = np.empty(spec.K, dtype=x.dtype) if bias else None
    if spec.N == 0:  # empty batch: zero gradients, nothing to run
        for g in (gx, gw, gb):
            if g is not None:
                g[...] = 0
        return from_channels_first(gx, data_format), gw, gb
    if input_grad or weight_grad:
        empty = _EMPTY[x.dtype][1]
        algo.backward(grad_y, x, weight,
                      gx if input_grad else empty, gw if weight_grad else empty,
                      input_grad, weight_grad, spec, weight_version)
    if bias:
        # One bias-gradient kernel serves every algorithm.
        bias_grad(grad_y, gb, kernel_threads(grad_y.size))
    return from_channels_first(gx, data_format), gw, gb
