"""Activations: forward against float64 references, backward by finite
differences, stability at extreme inputs, argument checks, torch peers."""
import numpy as np
import pytest

import convcore
import convcore.functional as F
import ref_ops
from gradcheck import directional_check
from bad_arguments import bad_argument_test

TOL = {np.float32: dict(rtol=2e-6, atol=1e-6), np.float64: dict(rtol=1e-13, atol=1e-14)}
SHAPES = [(2, 3, 4, 5), (1, 1, 1, 1), (7,), (3, 5)]

# name -> (forward, reference, backward taking (gy, x, y))
ELEMENTWISE = {
    "relu": (F.relu, ref_ops.relu, lambda gy, x, y: F.relu_backward(gy, y)),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: ref_ops.leaky_relu(x, 0.2),
                   lambda gy, x, y: F.leaky_relu_backward(gy, x, 0.2)),
    "sigmoid": (F.sigmoid, ref_ops.sigmoid, lambda gy, x, y: F.sigmoid_backward(gy, y)),
    "tanh": (F.tanh, ref_ops.tanh, lambda gy, x, y: F.tanh_backward(gy, y)),
    "softplus": (F.softplus, ref_ops.softplus, lambda gy, x, y: F.softplus_backward(gy, x)),
    "softplus_beta": (lambda x: F.softplus(x, 2.0, 3.0), lambda x: ref_ops.softplus(x, 2.0, 3.0),
                      lambda gy, x, y: F.softplus_backward(gy, x, 2.0, 3.0)),
}
# name -> (forward(x, axis), reference, backward(gy, y, axis))
AXISWISE = {
    "softmax": (F.softmax, ref_ops.softmax, F.softmax_backward),
    "log_softmax": (F.log_softmax, ref_ops.log_softmax, F.log_softmax_backward),
}


def _away_from_kinks(rng, shape, scale=3.0):
    """Random values at least 0.05 from 0 (relu/leaky_relu kinks) and from
    the softplus thresholds (20 and 3/2), so finite differences are smooth."""
    x = rng.uniform(-scale, scale, size=shape)
    x = np.where(np.abs(x) < 0.05, 0.5, x)
    return np.where(np.abs(x - 1.5) < 0.05, 1.3, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_matches_reference(rng, name, shape, dtype):
    fwd, ref, _ = ELEMENTWISE[name]
    x = (4 * rng.standard_normal(shape)).astype(dtype)
    y = fwd(x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, ref(x), **TOL[dtype])


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_gradients(rng, name):
    fwd, _, bwd = ELEMENTWISE[name]
    x = _away_from_kinks(rng, (3, 4, 5))
    up = rng.standard_normal(x.shape)
    gx = bwd(up, x, fwd(x))
    assert gx.shape == x.shape and gx.dtype == x.dtype
    directional_check(fwd, (x,), (gx,), up, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((4, 7), 1), ((4, 7), -1), ((4, 7), 0),
                                        ((2, 3, 4, 5), 1), ((2, 3, 4), 2), ((5,), 0),
                                        ((1, 1), 1)])
@pytest.mark.parametrize("name", list(AXISWISE))
def test_softmax_matches_reference(rng, name, shape, axis, dtype):
    fwd, ref, _ = AXISWISE[name]
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    y = fwd(x, axis=axis)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, ref(x, axis), **TOL[dtype])


@pytest.mark.parametrize("shape,axis", [((4, 7), 1), ((2, 3, 4, 5), 1), ((2, 3, 4), -1)])
@pytest.mark.parametrize("name", list(AXISWISE))
def test_softmax_gradients(rng, name, shape, axis):
    fwd, _, bwd = AXISWISE[name]
    x = rng.standard_normal(shape)
    up = rng.standard_normal(shape)
    gx = bwd(up, fwd(x, axis), axis)
    directional_check(lambda a: fwd(a, axis), (x,), (gx,), up, rng)


def test_softmax_default_axis_is_1(rng):
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_allclose(F.softmax(x), ref_ops.softmax(x, 1), rtol=1e-13)
    np.testing.assert_allclose(F.softmax(x).sum(axis=1), 1.0, rtol=1e-14)


# --- extreme values --------------------------------------------------------------

EXTREME = np.array([-1e30, -1e4, -745.0, -100.0, -30.0, -1e-8, 0.0, 1e-8, 30.0,
                    100.0, 710.0, 1e4, 1e30])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_inputs_do_not_overflow(dtype):
    x = EXTREME.astype(dtype)  # 1e30 fits float32 (max 3.4e38)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = F.sigmoid(x)
        sp = F.softplus(x)
        sp2 = F.softplus(x, beta=0.5, threshold=1e6)  # no linear shortcut
        gsp = F.softplus_backward(np.ones_like(x), x, beta=0.5, threshold=1e6)
        sm = F.softmax(x[None, :], axis=1)
        lsm = F.log_softmax(x[None, :], axis=1)
        th = F.tanh(x)
    for a in (s, sp, sp2, gsp, sm, lsm, th):
        assert a.dtype == dtype and np.all(np.isfinite(a))
    tiny = np.finfo(dtype).tiny  # below it float32 results are denormal
    np.testing.assert_allclose(s, ref_ops.sigmoid(x), rtol=1e-6, atol=tiny)
    np.testing.assert_allclose(sp, ref_ops.softplus(x), rtol=1e-6, atol=tiny)
    np.testing.assert_allclose(sp2, ref_ops.softplus(x, 0.5, 1e6), rtol=1e-6, atol=tiny)
    assert s[0] == 0 and s[-1] == 1 and sp[-1] == x[-1] and sp[0] == 0
    # The tail of softplus is kept, not rounded to 0: log(1 + e^-30).
    assert np.isclose(sp[4], np.log1p(np.exp(-30.0)), rtol=1e-6)
    assert sm[0, -1] == 1 and sm[0, 0] == 0
    np.testing.assert_allclose(lsm[0, -2:], [-1e30, 0.0], rtol=1e-6)


def test_softmax_huge_logits_rows(rng):
    x = np.array([[1000.0, 0.0, -1000.0], [1e4, 1e4, 1e4]], dtype=np.float32)
    y = F.softmax(x, axis=1)
    np.testing.assert_allclose(y, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6, atol=0)
    np.testing.assert_allclose(F.log_softmax(x, axis=1)[0], [0, -1000, -2000], rtol=1e-6)


def test_nan_propagates_as_in_torch():
    x = np.array([[np.nan, 1.0, -1.0]])
    assert np.isnan(F.relu(x)[0, 0]) and F.relu(x)[0, 2] == 0
    assert np.isnan(F.sigmoid(x)[0, 0]) and np.isnan(F.softplus(x)[0, 0])
    assert np.all(np.isnan(F.softmax(x, axis=1)))
    assert np.all(np.isnan(F.log_softmax(x, axis=1)))


@pytest.mark.parametrize("name", list(ELEMENTWISE) + list(AXISWISE))
def test_float32_agrees_with_float64(rng, name):
    x = 3 * rng.standard_normal((4, 6, 3))
    up = rng.standard_normal(x.shape)
    if name in AXISWISE:
        fwd, _, bwd = AXISWISE[name]
        run = lambda a, g: (fwd(a, 1), bwd(g, fwd(a, 1), 1))
    else:
        fwd, _, bwd = ELEMENTWISE[name]
        run = lambda a, g: (fwd(a), bwd(g, a, fwd(a)))
    for a32, a64 in zip(run(x.astype(np.float32), up.astype(np.float32)), run(x, up)):
        assert a32.dtype == np.float32
        np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-5)


def test_relu_kernel_is_thread_independent_and_large(rng):
    x = rng.standard_normal(100_003).astype(np.float32)  # several blocks + tail
    gy = rng.standard_normal(x.shape).astype(np.float32)
    out = []
    for n in (1, 2):
        prev = convcore.set_num_threads(n)
        try:
            y = F.relu(x)
            out.append((y, F.relu_backward(gy, y)))
        finally:
            convcore.set_num_threads(prev)
    np.testing.assert_array_equal(out[0][0], np.maximum(x, 0))
    np.testing.assert_array_equal(out[0][1], np.where(x > 0, gy, 0))
    for a, b in zip(out[0], out[1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(ELEMENTWISE) + list(AXISWISE))
def test_inputs_unchanged_outputs_fresh(rng, name):
    base = rng.standard_normal((4, 6, 5))
    x = base[:, ::2, 1:]  # non-contiguous view
    x.flags.writeable = False
    keep = x.copy()
    if name in AXISWISE:
        fwd, ref, bwd = AXISWISE[name]
        y = fwd(x, 1)
        np.testing.assert_allclose(y, ref(x, 1), rtol=1e-12)
        g = bwd(x, y, 1)
    else:
        fwd, ref, bwd = ELEMENTWISE[name]
        y = fwd(x)
        np.testing.assert_allclose(y, ref(x), rtol=1e-12, atol=1e-14)
        g = bwd(x, x, y)
    np.testing.assert_array_equal(x, keep)
    for out in (y, g):
        assert not np.shares_memory(out, base)
    # A contiguous read-only input goes to the kernels as it is: not
    # aliased, not written.
    c = np.ascontiguousarray(keep)
    c.flags.writeable = False
    out = fwd(c, 1) if name in AXISWISE else fwd(c)
    assert not np.shares_memory(out, c)
    np.testing.assert_array_equal(out, y)


def test_empty_inputs():
    x = np.zeros((0, 3), dtype=np.float32)
    for f in (F.relu, F.sigmoid, F.softplus, F.softmax, F.log_softmax):
        y = f(x)
        assert y.shape == (0, 3) and y.dtype == np.float32


# --- bad arguments ------------------------------------------------------------

X = np.zeros((2, 3), dtype=np.float32)


BAD = [
    (lambda: F.relu(X.astype(np.int64)), TypeError, "relu: input must be float32 or float64"),
    (lambda: F.sigmoid([1.0]), TypeError, "sigmoid: input must be a numpy.ndarray"),
    (lambda: F.relu_backward(X, X[:1]), ValueError, "relu_backward: grad_y has shape (2, 3) but y has shape (1, 3)"),
    (lambda: F.relu_backward(X.astype(np.float64), X), TypeError, "grad_y has dtype float64"),
    (lambda: F.leaky_relu(X, float("nan")), ValueError, "negative_slope must be a finite number"),
    (lambda: F.leaky_relu(X, "0.1"), ValueError, "negative_slope must be a finite number"),
    (lambda: F.softplus(X, beta=0), ValueError, "softplus: beta must be a finite number > 0"),
    (lambda: F.softplus(X, threshold=None), ValueError, "threshold must be a finite number"),
    (lambda: F.softplus_backward(X, X, beta=-1.0), ValueError, "beta must be a finite number > 0"),
    (lambda: F.softmax(X, axis=2), ValueError, "softmax: axis 2 is out of range for a 2-D input"),
    (lambda: F.log_softmax(X, axis=-3), ValueError, "axis -3 is out of range"),
    (lambda: F.softmax(X, axis=1.0), TypeError, "axis must be an int"),
    (lambda: F.softmax(np.ones((), np.float32)), ValueError, "at least 1 dimension"),
    (lambda: F.softmax_backward(X, X.T), ValueError, "grad_y has shape (2, 3) but y has shape (3, 2)"),
    (lambda: F.sigmoid_backward(X, X.astype(np.float16)), TypeError, "y must be float32 or float64"),
]

test_bad_arguments = bad_argument_test(BAD)


# --- PyTorch peer ------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_peer_torch(rng, dtype):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    x = _away_from_kinks(rng, (3, 5, 4), 25.0).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    cases = [  # (ours forward, ours backward(gy, x, y), torch)
        (F.relu, lambda g, a, y: F.relu_backward(g, y), tf.relu),
        (lambda a: F.leaky_relu(a, 0.1), lambda g, a, y: F.leaky_relu_backward(g, a, 0.1),
         lambda t: tf.leaky_relu(t, 0.1)),
        (F.sigmoid, lambda g, a, y: F.sigmoid_backward(g, y), torch.sigmoid),
        (F.tanh, lambda g, a, y: F.tanh_backward(g, y), torch.tanh),
        (F.softplus, lambda g, a, y: F.softplus_backward(g, a), tf.softplus),
        (lambda a: F.softplus(a, 0.5, 4.0), lambda g, a, y: F.softplus_backward(g, a, 0.5, 4.0),
         lambda t: tf.softplus(t, beta=0.5, threshold=4.0)),
        (lambda a: F.softmax(a, 1), lambda g, a, y: F.softmax_backward(g, y, 1),
         lambda t: tf.softmax(t, dim=1)),
        (lambda a: F.log_softmax(a, -1), lambda g, a, y: F.log_softmax_backward(g, y, -1),
         lambda t: tf.log_softmax(t, dim=-1)),
    ]
    for fwd, bwd, tfn in cases:
        xt = torch.tensor(x, requires_grad=True)
        yt = tfn(xt)
        yt.backward(torch.tensor(gy))
        y = fwd(x)
        np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
        np.testing.assert_allclose(bwd(gy, x, y), xt.grad.numpy(), **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_and_sigmoid_backward_kernels_equal_the_expressions(dtype, rng):
    """The threaded one-pass kernels give the NumPy expressions' bits, over
    several blocks on 2 threads, Inf and NaN included."""
    y = np.tanh(rng.standard_normal((3, 5, 71, 97))).astype(dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.flat[:3] = [np.nan, np.inf, -1.0]
    g.flat[3:5] = [np.inf, np.nan]
    previous = convcore.set_num_threads(2)
    try:
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(F.tanh_backward(g, y), g * (1 - y * y))
            s = (y + 1) / 2
            np.testing.assert_array_equal(F.sigmoid_backward(g, s), g * (s * (1 - s)))
    finally:
        convcore.set_num_threads(previous)
