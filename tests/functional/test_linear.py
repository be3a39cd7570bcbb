"""linear and dropout: forward against the float64 reference, backward by
finite differences, argument checks, torch peers."""
import numpy as np
import pytest

import convcore.functional as F
import ref_ops
from gradcheck import directional_check
from bad_arguments import bad_argument_test

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
# (input shape, out_features)
LINEAR_CASES = [((4, 5), 3), ((1, 1), 1), ((2, 3, 6), 4), ((7,), 2), ((0, 5), 3),
                # 2-64 rows and twice as many features: the transposed product
                ((4, 5), 9), ((2, 3, 6), 40), ((64, 7), 128), ((2, 1), 4),
                ((65, 3), 200), ((1, 8), 300)]  # past it: 65 rows, one row


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("shape,out", LINEAR_CASES)
def test_linear_matches_reference(rng, shape, out, with_bias, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((out, shape[-1])).astype(dtype)
    b = rng.standard_normal(out).astype(dtype) if with_bias else None
    y = F.linear(x, w, b)
    assert y.dtype == dtype and y.shape == shape[:-1] + (out,)
    np.testing.assert_allclose(y, ref_ops.linear(x, w, b), **TOL[dtype])


@pytest.mark.parametrize("shape,out", LINEAR_CASES[:4])
def test_linear_gradients(rng, shape, out):
    x = rng.standard_normal(shape)
    w = rng.standard_normal((out, shape[-1]))
    b = rng.standard_normal(out)
    up = rng.standard_normal(shape[:-1] + (out,))
    gx, gw, gb = F.linear_backward(up, x, w, bias=True)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (out,)
    directional_check(F.linear, (x, w, b), (gx, gw, gb), up, rng)
    assert F.linear_backward(up, x, w, bias=False)[2] is None


def test_linear_transposed_product_gives_the_same_bits_on_any_thread_count(rng):
    """Few rows against many features run as weight @ x.T, split by the
    weight's rows: each output is one thread's dot product, the same at 1
    and 2 threads."""
    import convcore
    from convcore._runtime import threads as _threads
    x = rng.standard_normal((16, 300)).astype(np.float32)
    w = rng.standard_normal((2000, 300)).astype(np.float32)
    b = rng.standard_normal(2000).astype(np.float32)
    previous, grain = convcore.get_num_threads(), _threads.GRAIN
    results = []
    try:
        _threads.GRAIN = 1
        for n in (1, 2):
            convcore.set_num_threads(n)
            results.append(F.linear(x, w, b))
    finally:
        convcore.set_num_threads(previous)
        _threads.GRAIN = grain
    np.testing.assert_array_equal(results[0], results[1])
    assert results[0].flags.c_contiguous
    # sums of 300 products of order 1: float32 rounding reaches ~1e-5
    np.testing.assert_allclose(results[0], ref_ops.linear(x, w, b), rtol=1e-5, atol=1e-4)


def test_linear_empty_batch_gives_zero_grads():
    x = np.zeros((0, 5), np.float32)
    w = np.ones((3, 5), np.float32)
    gx, gw, gb = F.linear_backward(np.zeros((0, 3), np.float32), x, w)
    assert gx.shape == (0, 5)
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)


def test_linear_float32_agrees_with_float64(rng):
    x, w, b = rng.standard_normal((8, 30)), rng.standard_normal((10, 30)), rng.standard_normal(10)
    up = rng.standard_normal((8, 10))
    c = lambda a: a.astype(np.float32)
    np.testing.assert_allclose(F.linear(c(x), c(w), c(b)), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    for a, e in zip(F.linear_backward(c(up), c(x), c(w)), F.linear_backward(up, x, w)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)


def test_linear_inputs_unchanged_and_views(rng):
    xb = rng.standard_normal((6, 10))
    x = xb[::2, ::2]  # non-contiguous (3, 5)
    w = rng.standard_normal((4, 5))
    w.flags.writeable = False
    keep = (x.copy(), w.copy())
    y = F.linear(x, w)
    F.linear_backward(np.ones_like(y), x, w)
    np.testing.assert_array_equal(x, keep[0])
    np.testing.assert_array_equal(w, keep[1])
    np.testing.assert_allclose(y, ref_ops.linear(keep[0], keep[1]), rtol=1e-12)


# --- dropout -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
def test_dropout_keeps_with_probability_and_scales(dtype, p):
    x = np.random.default_rng(1).standard_normal((200, 250)).astype(dtype)
    y, mask = F.dropout(x, p, rng=7, return_mask=True)
    assert y.dtype == dtype and mask.dtype == np.bool_ and mask.shape == x.shape
    # 50,000 draws: the kept fraction is within 5 sigma of 1 - p.
    sigma = np.sqrt(p * (1 - p) / x.size)
    assert abs(mask.mean() - (1 - p)) <= 5 * sigma + 1e-12
    scale = dtype(1 / (1 - p))
    np.testing.assert_array_equal(y[mask], x[mask] * scale)
    np.testing.assert_array_equal(y[~mask], 0)


def test_dropout_seeding():
    x = np.ones((50, 40), np.float32)
    a = F.dropout(x, 0.5, rng=3)
    np.testing.assert_array_equal(a, F.dropout(x, 0.5, rng=3))
    assert not np.array_equal(a, F.dropout(x, 0.5, rng=4))
    g = np.random.default_rng(5)
    first, second = F.dropout(x, 0.5, rng=g), F.dropout(x, 0.5, rng=g)
    assert not np.array_equal(first, second)  # the generator advanced
    np.testing.assert_array_equal(first, F.dropout(x, 0.5, rng=np.random.default_rng(5)))


def test_dropout_p_one_and_eval():
    x = np.arange(12, dtype=np.float64).reshape(3, 4) + 1
    y, mask = F.dropout(x, 1.0, rng=0, return_mask=True)
    np.testing.assert_array_equal(y, 0)
    assert not mask.any()
    np.testing.assert_array_equal(F.dropout_backward(np.ones_like(x), mask, 1.0), 0)
    y, mask = F.dropout(x, 0.5, training=False, return_mask=True)
    np.testing.assert_array_equal(y, x)
    assert mask is None and not np.shares_memory(y, x)
    g = np.full_like(x, 2.0)
    gx = F.dropout_backward(g, None, 0.5)
    np.testing.assert_array_equal(gx, g)
    assert not np.shares_memory(gx, g)


def test_dropout_gradient(rng):
    x = rng.standard_normal((4, 6))
    _, mask = F.dropout(x, 0.3, rng=11, return_mask=True)
    up = rng.standard_normal(x.shape)
    gx = F.dropout_backward(up, mask, 0.3)
    np.testing.assert_allclose(gx, up * mask / 0.7, rtol=1e-15)
    # Same seed -> same mask, so dropout is a fixed linear map of x.
    directional_check(lambda a: F.dropout(a, 0.3, rng=11), (x,), (gx,), up, rng)


def test_dropout_input_unchanged_output_fresh(rng):
    x = rng.standard_normal((5, 5)).astype(np.float32)
    keep = x.copy()
    for p in (0.0, 0.5):
        y = F.dropout(x, p, rng=0)
        assert not np.shares_memory(y, x)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(F.dropout(x, 0.0, rng=0), x)


# --- bad arguments ------------------------------------------------------------

X = np.zeros((2, 3), np.float32)
W = np.zeros((4, 3), np.float32)


BAD = [
    (lambda: F.linear(X, W.T), ValueError, "linear: input has 3 features (shape (2, 3)) but weight of shape (3, 4) expects 4"),
    (lambda: F.linear(X, W[0]), ValueError, "weight must be 2-D"),
    (lambda: F.linear(X, W.astype(np.float64)), TypeError, "weight has dtype float64"),
    (lambda: F.linear(X, W, np.zeros(3, np.float32)), ValueError, "bias must have shape (4,)"),
    (lambda: F.linear(X.astype(np.int32), W), TypeError, "input must be float32 or float64"),
    (lambda: F.linear(np.zeros((), np.float32), W), ValueError, "got a 0-D array"),
    (lambda: F.linear_backward(np.zeros((2, 3), np.float32), X, W), ValueError,
     "grad_y has shape (2, 3) but input (2, 3) and weight (4, 3) give output shape (2, 4)"),
    (lambda: F.dropout(X, 1.5), ValueError, "dropout: p must be a probability in [0, 1], got 1.5"),
    (lambda: F.dropout(X, -0.1), ValueError, "p must be a probability"),
    (lambda: F.dropout(X, True), ValueError, "p must be a probability"),
    (lambda: F.dropout(X, 0.5, training="yes"), TypeError, "training must be a bool"),
    (lambda: F.dropout(X, 0.5, rng=1.5), TypeError, "rng must be a numpy.random.Generator"),
    (lambda: F.dropout(X, 0.5, rng=-1), ValueError, "rng seed must be >= 0"),
    (lambda: F.dropout_backward(X, np.ones((2, 3)), 0.5), TypeError, "mask must be the boolean array"),
    (lambda: F.dropout_backward(X, np.ones((3, 2), bool), 0.5), ValueError,
     "mask has shape (3, 2) but grad_y has shape (2, 3)"),
]

test_bad_arguments = bad_argument_test(BAD)


# --- PyTorch peer ------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_peer_torch_linear(rng, dtype):
    torch = pytest.importorskip("torch")
    tol = TOL[dtype]
    x = rng.standard_normal((2, 3, 7)).astype(dtype)
    w = rng.standard_normal((5, 7)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    gy = rng.standard_normal((2, 3, 5)).astype(dtype)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.linear(xt, wt, bt)
    yt.backward(torch.tensor(gy))
    np.testing.assert_allclose(F.linear(x, w, b), yt.detach().numpy(), **tol)
    for ours, theirs in zip(F.linear_backward(gy, x, w), (xt, wt, bt)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), **tol)


def test_peer_torch_dropout_scaling():
    torch = pytest.importorskip("torch")
    # Masks come from different generators; compare torch's kept-value scale.
    x = np.full((100, 100), 3.0, np.float32)
    yt = torch.nn.functional.dropout(torch.tensor(x), 0.3, training=True).numpy()
    y = F.dropout(x, 0.3, rng=0)
    np.testing.assert_allclose(np.unique(y[y != 0]), np.unique(yt[yt != 0]), rtol=1e-7)
