"""The training batch-norm kernels (convcore._kernels.batchnorm.train_forward
and backward) called directly: against the formulas in NumPy float64, the
same bits at 1, 2 and 3 threads whatever the channel count (fewer channels
than threads included) and however the channels fall into blocks, and in
place where their docstrings allow it.
convcore.functional picks the threads by size, so tests through it run the
small shapes here on one thread only."""
import math

import numpy as np
import pytest

from convcore._kernels import batchnorm as bn

# The last: blocks of two channels (64 KiB each, kernels' BLOCK_BYTES is
# 128 KiB), five blocks per thread at two threads.
SHAPES = [(4, 6, 25), (3, 1, 49), (2, 3, 1), (5, 16, 16), (1, 7, 9), (2, 40, 9), (4, 20, 4096)]
EPS = 1e-5


def _empty(dtype):
    return np.empty((0, 0, 0), dtype)


def _forward(x, w, b, residual, lower, upper, threads, out=None):
    N, C, S = x.shape
    y = np.empty_like(x) if out is None else out
    stats = np.empty(C), np.empty(C), np.empty(C)
    bn.train_forward(x, w, b, EPS, _empty(x.dtype) if residual is None else residual, y,
                     *stats, threads, lower, upper)
    return (y,) + stats


def _reference_forward(x, w, b, residual, lower, upper):
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2))
    var = ((x64 - mean[:, None]) ** 2).mean(axis=(0, 2))
    invstd = 1 / np.sqrt(var + EPS)
    scale = invstd * w if w.size else invstd
    shift = b if b.size else np.zeros_like(mean)
    y = (x64 - mean[:, None]) * scale[:, None] + shift[:, None]
    if residual is not None:
        y = y + residual
    return np.clip(y, lower, upper), mean, var, invstd


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("fused", ["none", "relu", "relu6", "residual"])
def test_train_forward_matches_formula_and_threads(rng, dtype, shape, affine, fused):
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    w = rng.standard_normal(C) if affine else np.empty(0)
    b = rng.standard_normal(C) if affine else np.empty(0)
    residual = rng.standard_normal(shape).astype(dtype) if fused == "residual" else None
    lower, upper = {"none": (-math.inf, math.inf), "relu6": (0.0, 6.0)}.get(fused, (0.0, math.inf))
    x_before = x.copy()
    results = [_forward(x, w, b, residual, lower, upper, threads) for threads in (1, 2, 3)]
    np.testing.assert_array_equal(x, x_before)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)
    ref = _reference_forward(x, w, b, residual, lower, upper)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for got, want in zip(results[0], ref):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    # in place: y = x
    inplace = x.copy()
    _forward(inplace, w, b, residual, lower, upper, 2, out=inplace)
    np.testing.assert_array_equal(inplace, results[0][0])


def _backward(g, y, x, mean, invstd, w, training, threads, grad_m=None, grad_x=None):
    N, C, S = x.shape
    relu = y is not None
    gm = (np.empty_like(x) if grad_m is None else grad_m) if relu else _empty(x.dtype)
    gx = np.empty_like(x) if grad_x is None else grad_x
    sums = np.empty(C), np.empty(C)
    bn.backward(g, y if relu else _empty(x.dtype), x, mean, invstd, w, float(N * S), training,
                gm, gx, *sums, threads)
    return (gx, gm) + sums


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_backward_matches_formula_and_threads(rng, dtype, shape, training, relu):
    N, C, S = shape
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y = np.maximum(rng.standard_normal(shape), 0).astype(dtype) if relu else None
    mean, invstd, w = rng.standard_normal(C), rng.random(C) + 0.5, rng.standard_normal(C)
    g_before = g.copy()
    results = [_backward(g, y, x, mean, invstd, w, training, threads) for threads in (1, 2, 3)]
    np.testing.assert_array_equal(g, g_before)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)
    gm = np.where(y > 0, g, 0).astype(np.float64) if relu else g.astype(np.float64)
    d = x.astype(np.float64) - mean[:, None]
    sum_g, sum_gd = gm.sum(axis=(0, 2)), (gm * d).sum(axis=(0, 2))
    a = (invstd * w)[:, None]
    want = a * gm
    if training:
        want = want - a * (invstd ** 2 * sum_gd / (N * S))[:, None] * d - a * (sum_g / (N * S))[:, None]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(results[0][0], want, rtol=tol, atol=tol)
    np.testing.assert_allclose(results[0][2], sum_g, rtol=tol, atol=tol)
    np.testing.assert_allclose(results[0][3], sum_gd, rtol=tol, atol=tol)
    if relu:
        np.testing.assert_array_equal(results[0][1], gm.astype(dtype))
        # in place: the mask into grad_y itself, and grad_x over it
        own = g.copy()
        gx, gm_, *_ = _backward(own, y, x, mean, invstd, w, training, 2, grad_m=own, grad_x=own)
        assert gx is own and gm_ is own
        np.testing.assert_array_equal(own, results[0][0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_x", [False, True])
@pytest.mark.parametrize("cap", [math.inf, 6.0])
def test_relu_grad_sums_matches_formula_and_threads(rng, dtype, shape, with_x, cap):
    N, C, S = shape
    g = rng.standard_normal(shape).astype(dtype)
    y = (np.maximum(rng.standard_normal(shape), 0) * 5).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype) if with_x else _empty(dtype)
    mean = rng.standard_normal(C)
    results = []
    for threads in (1, 2, 3):
        gm, sums = np.empty_like(g), (np.empty(C), np.empty(C))
        bn.relu_grad_sums(g, y, x, mean, gm, *sums, threads, cap)
        results.append((gm,) + sums)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)
    want = np.where((y > 0) & (y < cap), g, 0)
    np.testing.assert_array_equal(results[0][0], want)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(results[0][1], want.astype(np.float64).sum(axis=(0, 2)), rtol=tol, atol=tol)
    if with_x:
        d = x.astype(np.float64) - mean[:, None]
        np.testing.assert_allclose(results[0][2], (want * d).sum(axis=(0, 2)), rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(results[0][2], 0)
