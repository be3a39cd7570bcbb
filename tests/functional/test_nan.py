"""NaN and Inf propagate as in PyTorch. Each test states the expected
values outright (CI has no torch) and, where torch is importable, also
compares with it, NaN positions included."""
import numpy as np
import pytest

import convcore.functional as F

DTYPES = [np.float32, np.float64]


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _same(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b))
    np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_nan_wins_its_window(dtype):
    x = np.arange(32, dtype=dtype).reshape(1, 2, 4, 4)
    x[0, 0, 1, 0] = np.nan          # in window (0, 0)
    x[0, 1, 2, 3] = np.nan          # in window (1, 1)
    x[0, 1, 3, 2] = np.inf          # same window: NaN still wins
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 4
    assert np.isnan(y[0, 1, 1, 1]) and idx[0, 1, 1, 1] == 11
    assert np.isfinite(np.delete(y.ravel(), [0, 7])).all()
    gx = F.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert gx[0, 0, 1, 0] == 1 and gx[0, 1, 2, 3] == 1 and gx[0, 1, 3, 2] == 0
    torch = _torch()
    if torch is not None:
        ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
        _same(y, ty.numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_max_pool_nan_and_inf(dtype):
    x = np.zeros((1, 1, 5, 5), dtype)
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 4, 4] = np.inf
    y, idx = F.adaptive_max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 0
    assert y[0, 0, 1, 1] == np.inf and idx[0, 0, 1, 1] == 24
    torch = _torch()
    if torch is not None:
        ty, tidx = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(x), 2, True)
        _same(y, ty.numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool_inf_and_opposite_infs(dtype):
    x = np.ones((1, 1, 4, 4), dtype)
    x[0, 0, 0, 0] = np.inf
    x[0, 0, 2, 2], x[0, 0, 3, 3] = np.inf, -np.inf
    y = F.avg_pool2d(x, 2)
    assert y[0, 0, 0, 0] == np.inf and np.isnan(y[0, 0, 1, 1])
    assert y[0, 0, 0, 1] == 1 and y[0, 0, 1, 0] == 1
    y2 = F.adaptive_avg_pool2d(x, 1)
    assert np.isnan(y2[0, 0, 0, 0])
    torch = _torch()
    if torch is not None:
        _same(y, torch.nn.functional.avg_pool2d(torch.from_numpy(x), 2).numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_of_a_constant_channel_is_finite_with_eps(dtype):
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(dtype)
    x[:, 1] = 3.0                                   # zero variance
    bias = np.array([0.5, -2.0, 1.0], dtype)
    y, mean, invstd = F.batch_norm(x, None, None, None, bias, training=True,
                                   return_stats=True)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[:, 1], -2.0)       # (x - mean) = 0 exactly
    np.testing.assert_allclose(invstd[1], 1 / np.sqrt(1e-5), rtol=1e-6)
    gy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    gx, _, gb = F.batch_norm_backward(gy, x, mean, invstd, None, training=True)
    assert np.isfinite(gx).all()
    torch = _torch()
    if torch is not None:
        tx = torch.from_numpy(x).requires_grad_()
        ty = torch.nn.functional.batch_norm(tx, None, None, None, torch.from_numpy(bias),
                                            training=True)
        ty.backward(torch.from_numpy(gy))
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
        np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)


@pytest.mark.filterwarnings("ignore:divide by zero")
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_constant_channel_eps_zero_gives_nan(dtype):
    # torch refuses eps=0 in training; convcore allows it, and the 0 * inf
    # of a constant channel is a NaN there, never a made-up number.
    x = np.ones((2, 2, 3), dtype)
    x[:, 0] = np.arange(6).reshape(2, 3)
    y = F.batch_norm(x, None, None, training=True, eps=0.0)
    assert np.isfinite(y[:, 0]).all() and np.isnan(y[:, 1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_nan_stays_in_its_channel(dtype):
    x = np.random.default_rng(2).standard_normal((4, 3, 5)).astype(dtype)
    x[1, 2, 3] = np.nan
    y = F.batch_norm(x, None, None, training=True)
    assert np.isnan(y[:, 2]).all() and np.isfinite(y[:, :2]).all()


def _conv_case(dtype):
    rng = np.random.default_rng(3)
    x = rng.random((2, 16, 8, 8)).astype(dtype)
    w = rng.random((16, 16, 3, 3)).astype(dtype)      # positive: Inf stays Inf
    x[0, 3, 4, 4] = np.inf
    x[1, 5, 1, 6] = -np.inf
    x[1, 5, 2, 6] = np.inf                            # meets -Inf in some windows
    x[1, 7, 6, 1] = np.nan
    return x, w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["direct", "im2col", "winograd", "auto"])
def test_conv_inf_and_nan_reach_exactly_the_windows_that_see_them(dtype, algorithm):
    x, w = _conv_case(dtype)
    y = F.conv2d(x, w, padding=1, algorithm=algorithm)
    # Stated: output (n, :, i, j) sees input rows i-1..i+1, columns j-1..j+1.
    assert (y[0, :, 3:6, 3:6] == np.inf).all()
    assert np.isnan(y[1, :, 1:3, 5:8]).all()          # -Inf + Inf
    assert (y[1, :, 0, 5:8] == -np.inf).all()
    assert np.isnan(y[1, :, 5:8, 0:3]).all()
    finite = np.ones(y.shape, bool)
    finite[0, :, 3:6, 3:6] = finite[1, :, 0:4, 5:8] = finite[1, :, 5:8, 0:3] = False
    assert np.isfinite(y[finite]).all()
    torch = _torch()
    if torch is not None:
        _same(y, torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                            padding=1).numpy())


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "winograd"])
def test_conv_backward_with_inf_gradient_matches_torch(algorithm):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.random((1, 16, 6, 6))
    w = rng.random((16, 16, 3, 3))
    gy = rng.random((1, 16, 6, 6))
    gy[0, 2, 3, 3] = np.inf
    gx, gw, gb = F.conv2d_backward(gy, x, w, padding=1, algorithm=algorithm)
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    torch.nn.functional.conv2d(tx, tw, padding=1).backward(torch.from_numpy(gy))
    _same(gx, tx.grad.numpy())
    _same(gw, tw.grad.numpy())
    assert gb[2] == np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_pass_nan_through(dtype):
    x = np.array([np.nan, -np.inf, np.inf, -1.0, 2.0], dtype)
    assert np.isnan(F.relu(x)[0]) and F.relu(x)[1] == 0 and F.relu(x)[2] == np.inf
    s = F.sigmoid(x)
    assert np.isnan(s[0]) and s[1] == 0 and s[2] == 1
    torch = _torch()
    if torch is not None:
        _same(F.relu(x), torch.relu(torch.from_numpy(x)).numpy())
        _same(F.leaky_relu(x), torch.nn.functional.leaky_relu(torch.from_numpy(x)).numpy())
        _same(F.tanh(x), torch.tanh(torch.from_numpy(x)).numpy())
