"""group_norm, layer_norm, instance_norm: forward against the float64
reference, backward by finite differences and against torch."""
import numpy as np
import pytest

import convcore
import convcore.functional as F
import ref_ops
from gradcheck import directional_check
from bad_arguments import bad_argument_test

RTOL = {np.float32: 2e-5, np.float64: 1e-12}
ATOL = {np.float32: 2e-5, np.float64: 1e-12}

# (input shape, num_groups)
GROUP_CASES = [((2, 6, 3, 4), 3), ((1, 4, 1, 1), 2), ((3, 4), 2), ((2, 6, 5), 1),
               ((2, 5, 2, 3), 5), ((1, 3, 2, 2, 2), 3)]
# (input shape, normalized_shape)
LAYER_CASES = [((4, 5), 5), ((2, 3, 4, 5), (4, 5)), ((3, 7), (7,)), ((1, 1), 1),
               ((2, 3, 2, 2), (3, 2, 2))]
INSTANCE_SHAPES = [(2, 3, 4, 5), (1, 1, 1, 1), (3, 2, 7), (1, 2, 2, 3, 2)]


def _params(rng, shape, dtype, affine):
    if not affine:
        return None, None
    return (rng.standard_normal(shape).astype(dtype),
            rng.standard_normal(shape).astype(dtype))


# --- forward -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape,G", GROUP_CASES)
def test_group_norm_matches_reference(rng, shape, G, affine, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    w, b = _params(rng, (shape[1],), dtype, affine)
    y = F.group_norm(x, G, w, b, eps=1e-5)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, ref_ops.group_norm(x, G, w, b, 1e-5),
                               rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape,ns", LAYER_CASES)
def test_layer_norm_matches_reference(rng, shape, ns, affine, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    nshape = (ns,) if isinstance(ns, int) else tuple(ns)
    w, b = _params(rng, nshape, dtype, affine)
    y = F.layer_norm(x, ns, w, b, eps=1e-5)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, ref_ops.layer_norm(x, nshape, w, b, 1e-5),
                               rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape", INSTANCE_SHAPES)
def test_instance_norm_matches_reference(rng, shape, affine, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    w, b = _params(rng, (shape[1],), dtype, affine)
    y = F.instance_norm(x, w, b, eps=1e-3)
    np.testing.assert_allclose(y, ref_ops.instance_norm(x, w, b, 1e-3),
                               rtol=RTOL[dtype], atol=ATOL[dtype])


def test_stats_are_mean_and_inverse_std(rng):
    x = rng.standard_normal((3, 6, 2, 5))
    _, mean, invstd = F.group_norm(x, 2, eps=0.1, return_stats=True)
    assert mean.shape == invstd.shape == (3, 2)
    rows = x.reshape(3, 2, -1)
    np.testing.assert_allclose(mean, rows.mean(-1), rtol=1e-13)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(rows.var(-1) + 0.1), rtol=1e-13)
    _, mean, invstd = F.layer_norm(x, (2, 5), return_stats=True)
    assert mean.shape == (3, 6)
    np.testing.assert_allclose(mean, x.mean(axis=(2, 3)), rtol=1e-12, atol=1e-15)
    _, mean, invstd = F.instance_norm(x, return_stats=True)
    assert mean.shape == (3, 6)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(x.var(axis=(2, 3)) + 1e-5), rtol=1e-13)


def test_float32_large_offset_uses_stable_variance(rng):
    # mean 1e4, std 1e-1: a one-pass E[x^2]-E[x]^2 in float32 loses all
    # digits; the two-pass, double-accumulated kernel keeps them.
    x64 = 1e4 + 0.1 * rng.standard_normal((2, 4, 8, 8))
    x32 = x64.astype(np.float32)
    y32 = F.group_norm(x32, 2)
    np.testing.assert_allclose(y32, ref_ops.group_norm(x32, 2), rtol=1e-3, atol=2e-3)


def test_constant_rows_give_zero_not_nan():
    x = np.full((2, 4, 3, 3), 7.0, dtype=np.float32)
    y = F.group_norm(x, 2, bias=np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(y, np.broadcast_to(np.arange(4, dtype=np.float32)[:, None, None], x.shape))


def test_float32_agrees_with_float64(rng):
    x = rng.standard_normal((4, 8, 5, 5))
    w, b = rng.standard_normal(8), rng.standard_normal(8)
    gy = rng.standard_normal(x.shape)
    y64, m64, s64 = F.group_norm(x, 4, w, b, return_stats=True)
    c = lambda a: a.astype(np.float32)
    y32, m32, s32 = F.group_norm(c(x), 4, c(w), c(b), return_stats=True)
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    g64 = F.group_norm_backward(gy, x, 4, m64, s64, w)
    g32 = F.group_norm_backward(c(gy), c(x), 4, m32, s32, c(w))
    for a, b_ in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b_, rtol=1e-4, atol=1e-4)


def test_result_does_not_depend_on_thread_count(rng):
    x = rng.standard_normal((5, 12, 6, 6)).astype(np.float32)
    w = rng.standard_normal(12).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    xl = rng.standard_normal((37, 300)).astype(np.float32)  # layer norm: flat path
    wl = rng.standard_normal(300).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        prev = convcore.set_num_threads(n)
        try:
            y, m, s = F.group_norm(x, 3, w, return_stats=True)
            yl, ml, sl = F.layer_norm(xl, 300, wl, return_stats=True)
            results.append((y, yl) + F.group_norm_backward(gy, x, 3, m, s, w)
                           + F.layer_norm_backward(xl, xl, 300, ml, sl, wl))
        finally:
            convcore.set_num_threads(prev)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_inputs_unchanged_and_views_accepted(rng):
    base = rng.standard_normal((2, 8, 4, 6))
    x = base[:, ::2, :, ::2]  # non-contiguous
    w = rng.standard_normal(4)
    w.flags.writeable = False
    keep = (x.copy(), w.copy())
    y, m, s = F.group_norm(x, 2, w, None, return_stats=True)
    gy = np.ones_like(x)
    F.group_norm_backward(gy, x, 2, m, s, w)
    np.testing.assert_array_equal(x, keep[0])
    np.testing.assert_array_equal(w, keep[1])
    np.testing.assert_allclose(y, ref_ops.group_norm(x, 2, w), rtol=1e-12, atol=1e-12)
    assert not np.shares_memory(y, x)


def test_empty_batch():
    x = np.zeros((0, 4, 3, 3), dtype=np.float32)
    y, m, s = F.group_norm(x, 2, np.ones(4, np.float32), return_stats=True)
    assert y.shape == x.shape and m.shape == (0, 2)
    gx, gw, gb = F.group_norm_backward(x, x, 2, m, s, np.ones(4, np.float32))
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)


# --- backward: finite differences ------------------------------------------------

@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape,G", GROUP_CASES)
def test_group_norm_gradients(rng, shape, G, affine):
    x = rng.standard_normal(shape)
    w, b = _params(rng, (shape[1],), np.float64, affine)
    up = rng.standard_normal(shape)
    _, m, s = F.group_norm(x, G, w, b, return_stats=True)
    gx, gw, gb = F.group_norm_backward(up, x, G, m, s, w)
    assert (gw is None) == (not affine) and gb.shape == (shape[1],)
    np.testing.assert_allclose(gb, up.sum(axis=tuple(i for i in range(len(shape)) if i != 1)),
                               rtol=1e-12)
    if affine:
        directional_check(lambda x_, w_, b_: F.group_norm(x_, G, w_, b_),
                          (x, w, b), (gx, gw, gb), up, rng)
    else:
        directional_check(lambda x_: F.group_norm(x_, G), (x,), (gx,), up, rng)


@pytest.mark.parametrize("shape,ns", LAYER_CASES)
def test_layer_norm_gradients(rng, shape, ns):
    x = rng.standard_normal(shape)
    nshape = (ns,) if isinstance(ns, int) else tuple(ns)
    w, b = _params(rng, nshape, np.float64, True)
    up = rng.standard_normal(shape)
    _, m, s = F.layer_norm(x, ns, w, b, return_stats=True)
    gx, gw, gb = F.layer_norm_backward(up, x, ns, m, s, w)
    assert gw.shape == gb.shape == nshape
    directional_check(lambda x_, w_, b_: F.layer_norm(x_, ns, w_, b_),
                      (x, w, b), (gx, gw, gb), up, rng)


@pytest.mark.parametrize("shape", INSTANCE_SHAPES)
def test_instance_norm_gradients(rng, shape):
    x = rng.standard_normal(shape)
    w, b = _params(rng, (shape[1],), np.float64, True)
    up = rng.standard_normal(shape)
    _, m, s = F.instance_norm(x, w, b, return_stats=True)
    gx, gw, gb = F.instance_norm_backward(up, x, m, s, w)
    directional_check(lambda x_, w_, b_: F.instance_norm(x_, w_, b_),
                      (x, w, b), (gx, gw, gb), up, rng)


# --- bad arguments ------------------------------------------------------------

X = np.zeros((2, 4, 3, 3), dtype=np.float32)
W4 = np.ones(4, dtype=np.float32)
S22 = np.zeros((2, 2), dtype=np.float32)


BAD = [
    (lambda: F.group_norm(X, 3), ValueError, "num_groups=3 does not divide the 4 channels"),
    (lambda: F.group_norm(X, 0), ValueError, "num_groups must be >= 1"),
    (lambda: F.group_norm(X, 2.0), TypeError, "num_groups must be an int"),
    (lambda: F.group_norm(X[0, 0, 0], 1), ValueError, "at least 2 dimensions"),
    (lambda: F.group_norm(X.astype(np.int32), 2), TypeError, "input must be float32 or float64"),
    (lambda: F.group_norm(X, 2, np.ones(3, np.float32)), ValueError, "weight must have shape (4,)"),
    (lambda: F.group_norm(X, 2, W4.astype(np.float64)), TypeError, "weight has dtype float64"),
    (lambda: F.group_norm(X, 2, None, np.ones((4, 1), np.float32)), ValueError, "bias must have shape (4,)"),
    (lambda: F.group_norm(X, 2, eps=-1.0), ValueError, "eps must be a finite number >= 0"),
    (lambda: F.group_norm([[1.0]], 1), TypeError, "input must be a numpy.ndarray"),
    (lambda: F.layer_norm(X, (3, 4)), ValueError, "normalized_shape (3, 4) must match the last dimensions"),
    (lambda: F.layer_norm(X, (1, 2, 4, 3, 3)), ValueError, "must match the last dimensions"),
    (lambda: F.layer_norm(X, 0), ValueError, "normalized_shape must be >= 1"),
    (lambda: F.layer_norm(X, 3, np.ones(4, np.float32)), ValueError, "weight must have shape (3,)"),
    (lambda: F.instance_norm(X[:, :, 0, 0]), ValueError, "at least one spatial dimension"),
    (lambda: F.group_norm_backward(X, X, 2, S22, S22[:, :1]), ValueError, "invstd must have shape (2, 2)"),
    (lambda: F.group_norm_backward(X[:1], X, 2, S22, S22), ValueError, "grad_y has shape (1, 4, 3, 3)"),
    (lambda: F.group_norm_backward(X, X, 2, S22.astype(np.float64), S22), TypeError, "mean has dtype float64"),
    (lambda: F.layer_norm_backward(X, X, (3, 3), S22, S22), ValueError, "mean must have shape (2, 4)"),
    (lambda: F.instance_norm_backward(X, X, S22, S22), ValueError, "mean must have shape (2, 4)"),
]

test_bad_arguments = bad_argument_test(BAD, prefix=("norm", "norm_backward", "convcore"))


# --- PyTorch peer ------------------------------------------------------------

def _torch_grads(torch_fn, x, w, b, gy):
    torch = pytest.importorskip("torch")
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch_fn(xt, wt, bt)
    yt.backward(torch.tensor(gy))
    return yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_peer_torch(rng, dtype):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    x = rng.standard_normal((3, 6, 5, 4)).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    w, b = (rng.standard_normal(6).astype(dtype) for _ in range(2))
    wl, bl = (rng.standard_normal((5, 4)).astype(dtype) for _ in range(2))
    cases = [
        (lambda xt, wt, bt: tf.group_norm(xt, 3, wt, bt, eps=1e-3),
         F.group_norm(x, 3, w, b, eps=1e-3, return_stats=True),
         lambda m, s: F.group_norm_backward(gy, x, 3, m, s, w), (w, b)),
        (lambda xt, wt, bt: tf.layer_norm(xt, (5, 4), wt, bt),
         F.layer_norm(x, (5, 4), wl, bl, return_stats=True),
         lambda m, s: F.layer_norm_backward(gy, x, (5, 4), m, s, wl), (wl, bl)),
        (lambda xt, wt, bt: tf.instance_norm(xt, weight=wt, bias=bt),
         F.instance_norm(x, w, b, return_stats=True),
         lambda m, s: F.instance_norm_backward(gy, x, m, s, w), (w, b)),
    ]
    for torch_fn, (y, m, s), backward, (wa, ba) in cases:
        ty, tgx, tgw, tgb = _torch_grads(torch_fn, x, wa, ba, gy)
        np.testing.assert_allclose(y, ty, **tol)
        for ours, theirs in zip(backward(m, s), (tgx, tgw, tgb)):
            np.testing.assert_allclose(ours, theirs, **tol)
