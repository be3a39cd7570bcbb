"""local_response_norm and its backward against the float64 loop references
in ref_pool.py, finite differences, bad arguments, and PyTorch as a peer
when it is installed."""
import numpy as np
import pytest

import convcore
import convcore.functional as F
import ref_pool as ref
from gradcheck import directional_check
from bad_arguments import bad_argument_test

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-6, np.float64: 1e-13}

CASES = [  # shape, size, alpha, beta, k
    ((2, 7, 5, 6), 5, 1e-4, 0.75, 2.0),          # AlexNet's constants
    ((2, 7, 5, 6), 5, 0.5, 0.75, 1.0),           # large alpha: the sums matter
    ((1, 3, 4), 4, 0.3, 0.5, 1.0),               # even size, (N, C, L)
    ((2, 6, 3, 3), 1, 0.2, 1.0, 0.5),            # size 1: own channel only
    ((2, 4, 2, 2), 9, 0.4, 0.75, 1.0),           # window wider than C
    ((1, 1, 1, 1), 3, 1.0, 2.0, 1.0),            # one channel, 1x1
    ((3, 5, 20, 30), 3, 0.1, 0.6, 1.5),          # 600 positions: several blocks
    ((1, 4, 2, 3, 2), 2, 0.3, 0.75, 1.0),        # (N, C, D, H, W)
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,size,alpha,beta,k", CASES)
def test_matches_reference(rng, dtype, shape, size, alpha, beta, k):
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    y = F.local_response_norm(x, size, alpha, beta, k)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, ref.local_response_norm(x, size, alpha, beta, k),
                               rtol=RTOL[dtype], atol=ATOL[dtype])
    gy = rng.standard_normal(shape).astype(dtype)
    gx = F.local_response_norm_backward(gy, x, size, alpha, beta, k)
    assert gx.dtype == dtype
    np.testing.assert_allclose(
        gx, ref.local_response_norm_backward(gy, x, size, alpha, beta, k),
        rtol=RTOL[dtype], atol=10 * ATOL[dtype])


@pytest.mark.parametrize("shape,size,alpha,beta,k", [CASES[1], CASES[2], CASES[4]])
def test_gradient_finite_differences(rng, shape, size, alpha, beta, k):
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(shape)
    gx = F.local_response_norm_backward(gy, x, size, alpha, beta, k)
    directional_check(lambda a: F.local_response_norm(a, size, alpha, beta, k),
                      [x], [gx], gy, rng)


def test_hand_computed_values():
    # Channels 1, 2, 3 at one pixel; size 3, alpha 3 (alpha/size = 1), beta 1,
    # k 1: d = 1 + (sum of squares over the clipped window).
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    y = F.local_response_norm(x, 3, alpha=3.0, beta=1.0, k=1.0)
    np.testing.assert_allclose(y.ravel(), [1 / (1 + 1 + 4), 2 / (1 + 1 + 4 + 9),
                                           3 / (1 + 4 + 9)], rtol=1e-15)


def test_float32_agrees_with_float64_threads_and_inputs(rng):
    x = rng.standard_normal((3, 6, 17, 19))
    gy = rng.standard_normal(x.shape)
    x32, gy32 = x.astype(np.float32), gy.astype(np.float32)
    np.testing.assert_allclose(F.local_response_norm(x32, 5, 0.3),
                               F.local_response_norm(x, 5, 0.3), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(F.local_response_norm_backward(gy32, x32, 5, 0.3),
                               F.local_response_norm_backward(gy, x, 5, 0.3),
                               rtol=1e-4, atol=1e-5)
    previous = convcore.set_num_threads(1)
    try:
        one = (F.local_response_norm(x32, 5, 0.3),
               F.local_response_norm_backward(gy32, x32, 5, 0.3))
        convcore.set_num_threads(2)
        two = (F.local_response_norm(x32, 5, 0.3),
               F.local_response_norm_backward(gy32, x32, 5, 0.3))
    finally:
        convcore.set_num_threads(previous)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    # Non-contiguous, read-only inputs: accepted, unchanged.
    xs = x[:, ::2, :, ::3]
    gys = gy[:, ::2, :, ::3]
    for a in (xs, gys):
        a.flags.writeable = False
    saved = (xs.copy(), gys.copy())
    np.testing.assert_allclose(F.local_response_norm(xs, 3, 0.3),
                               ref.local_response_norm(saved[0], 3, 0.3), rtol=1e-12)
    F.local_response_norm_backward(gys, xs, 3, 0.3)
    np.testing.assert_array_equal(xs, saved[0])
    np.testing.assert_array_equal(gys, saved[1])


def test_empty_batch():
    x = np.zeros((0, 3, 2, 2), dtype=np.float32)
    assert F.local_response_norm(x, 2).shape == x.shape
    assert F.local_response_norm_backward(x, x, 2).shape == x.shape


X = np.zeros((2, 3, 4, 4), dtype=np.float32)

BAD = [
    (F.local_response_norm, (X.astype(np.int16), 3), {}, TypeError, "float32 or float64"),
    (F.local_response_norm, (X[0, 0], 3), {}, ValueError, "must be (3, 4, 5)-D"),
    (F.local_response_norm, (X, 0), {}, ValueError, "size must be >= 1"),
    (F.local_response_norm, (X, 2.0), {}, TypeError, "size must be an int"),
    (F.local_response_norm, (X, 3), {"alpha": "1e-4"}, TypeError, "alpha must be a real"),
    (F.local_response_norm, (X, 3), {"beta": float("nan")}, ValueError, "beta must be finite"),
    (F.local_response_norm, (X, 3), {"k": None}, TypeError, "k must be a real"),
    (F.local_response_norm, (np.zeros((2, 0, 3)), 3), {}, ValueError, "empty"),
    (F.local_response_norm_backward, (X[:1], X, 3), {}, ValueError, "grad_y of shape (1, 3, 4, 4)"),
    (F.local_response_norm_backward, (X.astype(np.float64), X, 3), {}, TypeError, "grad_y has dtype"),
]


test_bad_arguments = bad_argument_test(BAD)


@pytest.mark.parametrize("shape,size,alpha,beta,k", CASES)
def test_matches_torch(rng, shape, size, alpha, beta, k):
    torch = pytest.importorskip("torch")
    x = 2 * rng.standard_normal(shape)
    xt = torch.from_numpy(x).requires_grad_()
    ty = torch.nn.functional.local_response_norm(xt, size, alpha, beta, k)
    np.testing.assert_allclose(F.local_response_norm(x, size, alpha, beta, k),
                               ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    gy = rng.standard_normal(shape)
    ty.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(F.local_response_norm_backward(gy, x, size, alpha, beta, k),
                               xt.grad.numpy(), rtol=1e-10, atol=1e-12)
