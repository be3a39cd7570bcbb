"""conv2d's plan cache (functional/conv.py): repeated calls of one shape skip
the shape checks, algorithm choice and memory bound, but never the checks of
the arrays themselves, never give a different result, and never hand out an
array the caller already holds."""
import numpy as np
import pytest

import convcore
from convcore import F, nn
from convcore.algorithms import autotune
from convcore.utils import validation as _validation
from convcore.functional import conv as fconv
from ref_conv import conv2d_backward_ref, conv2d_ref

rng = np.random.default_rng(7)
# Arrays of one cached shape (as in test_conv_errors.py).
_arrays = np.random.default_rng(0)
X = _arrays.standard_normal((2, 4, 8, 8)).astype(np.float32)
W = _arrays.standard_normal((6, 4, 3, 3)).astype(np.float32)
B = _arrays.standard_normal(6).astype(np.float32)


@pytest.fixture
def empty_cache():
    fconv._plans.clear()
    yield
    fconv._plans.clear()


def _uncached(f, *args, **kwargs):
    """f's result with the plan cache emptied before and after."""
    fconv._plans.clear()
    try:
        return f(*args, **kwargs)
    finally:
        fconv._plans.clear()


@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col", "winograd"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cached_results_equal_uncached_and_the_reference(empty_cache, algorithm, dtype):
    x = rng.standard_normal((2, 8, 9, 7)).astype(dtype)
    w = rng.standard_normal((8, 4, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    gy = rng.standard_normal((2, 8, 9, 7)).astype(dtype)
    args = dict(padding=1, groups=2, algorithm=algorithm)
    y0 = _uncached(F.conv2d, x, w, b, **args)
    g0 = _uncached(F.conv2d_backward, gy, x, w, **args)
    for _ in range(3):  # the first call fills the cache, the others use it
        y = F.conv2d(x, w, b, **args)
        g = F.conv2d_backward(gy, x, w, **args)
        np.testing.assert_array_equal(y, y0)  # same algorithm, same kernel: bitwise
        for a, a0 in zip(g, g0):
            np.testing.assert_array_equal(a, a0)
    assert len(fconv._plans) == 1  # forward and backward share the plan
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    xd, wd = x.astype(np.float64), w.astype(np.float64)
    np.testing.assert_allclose(y, conv2d_ref(xd, wd, b.astype(np.float64), padding=1, groups=2), **tol)
    for a, ref in zip(g, conv2d_backward_ref(gy.astype(np.float64), xd, wd, padding=1, groups=2)):
        np.testing.assert_allclose(a, ref, **tol)


def test_new_shape_or_dtype_gets_its_own_checked_plan(empty_cache):
    w32 = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    for shape, dtype in [((2, 4, 8, 8), np.float32), ((2, 4, 10, 7), np.float32),
                         ((1, 4, 8, 8), np.float32), ((2, 4, 8, 8), np.float64)]:
        x = rng.standard_normal(shape).astype(dtype)
        w = w32.astype(dtype)
        y = F.conv2d(x, w, padding=1)
        assert y.shape == (shape[0], 6, shape[2], shape[3]) and y.dtype == dtype
        np.testing.assert_allclose(y, conv2d_ref(x.astype(np.float64), w.astype(np.float64), padding=1),
                                   rtol=1e-4, atol=1e-4)
    assert len(fconv._plans) == 4
    # A shape whose checks fail is refused however many good calls came before.
    with pytest.raises(ValueError, match="expects 4 input channels"):
        F.conv2d(np.zeros((2, 5, 8, 8), np.float32), w32, padding=1)
    with pytest.raises(TypeError, match="weight has dtype float32 but the input has dtype float64"):
        F.conv2d(np.zeros((2, 4, 8, 8)), w32, padding=1)
    assert len(fconv._plans) == 4  # failed calls store nothing


@pytest.mark.parametrize("value", [1.0, True, np.float32(1)])
@pytest.mark.parametrize("arg", ["stride", "dilation", "groups"])
def test_equal_values_of_other_types_do_not_share_an_int_plan(empty_cache, arg, value):
    F.conv2d(X, W, **{arg: 1})  # caches the plan of the int 1
    with pytest.raises(TypeError, match=f"conv2d: {arg} must be an int"):
        F.conv2d(X, W, **{arg: value})
    with pytest.raises(TypeError, match=f"conv2d: {arg} must be an int"):
        F.conv2d(X, W, **{arg: (1, value)} if arg != "groups" else {arg: value})


def test_per_call_array_checks_still_run_on_a_cached_plan(empty_cache):
    y0 = F.conv2d(X, W, B)
    # Non-contiguous, read-only arrays of the cached shape: copied, untouched.
    xs = np.empty((2, 4, 8, 16), np.float32)[..., ::2]
    xs[...] = X
    ws = np.asfortranarray(W)
    bs = np.repeat(B, 2)[::2]
    for a in (xs, ws, bs):
        a.setflags(write=False)
    np.testing.assert_array_equal(F.conv2d(xs, ws, bs), y0)
    np.testing.assert_array_equal(xs, X)
    # New weights and bias of the same shape are used, not remembered ones.
    w2, b2 = W * 2, B * 2
    np.testing.assert_allclose(F.conv2d(X, w2, b2), 2 * y0, rtol=1e-5, atol=1e-5)
    gy = np.ones((2, 6, 6, 6), np.float32)
    ref = F.conv2d_backward(gy, X, W)
    got = F.conv2d_backward(np.asfortranarray(gy), xs, ws)
    for a, r in zip(got, ref):
        np.testing.assert_array_equal(a, r)
    with pytest.raises(TypeError, match="conv2d: input must be a numpy.ndarray"):
        F.conv2d(X.tolist(), W)
    with pytest.raises(TypeError, match="conv2d: bias must be a numpy.ndarray"):
        F.conv2d(X, W, B.tolist())
    with pytest.raises(TypeError, match="conv2d_backward: grad_y must be a numpy.ndarray"):
        F.conv2d_backward(gy.tolist(), X, W)


def test_outputs_of_consecutive_calls_never_alias(empty_cache):
    x1, x2 = X, X[::-1].copy()
    conv = nn.Conv2d(4, 6, 3, padding=1, rng=0)
    relu = nn.ReLU()
    net = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, rng=1), nn.ReLU(),
                        nn.Conv2d(6, 6, 3, padding=1, rng=2))
    for f in (lambda x: F.conv2d(x, W, B, padding=1), conv, lambda x: relu(conv(x)), net):
        for grad in (True, False):
            with convcore.no_grad() if not grad else _nothing():
                y1 = f(x1)
                kept = y1.copy()
                y2 = f(x2)
                y3 = f(x1)
            assert not np.shares_memory(y1, y2) and not np.shares_memory(y1, y3)
            np.testing.assert_array_equal(y1, kept)
            np.testing.assert_array_equal(y3, kept)
            assert not np.array_equal(y2, kept)
    gy = np.ones((2, 6, 8, 8), np.float32)
    g1 = F.conv2d_backward(gy, x1, W, padding=1)
    kept = [g.copy() for g in g1]
    g2 = F.conv2d_backward(gy, x2, W, padding=1)
    for a, b, k in zip(g1, g2, kept):
        assert not np.shares_memory(a, b)
        np.testing.assert_array_equal(a, k)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_autotune_is_asked_on_every_call_while_enabled(empty_cache, monkeypatch):
    asked = []

    def measured_choice(spec):
        asked.append(spec)
        return "direct" if autotune.enabled() else None

    monkeypatch.setattr(autotune, "measured_choice", measured_choice)
    F.conv2d(X, W)  # heuristic choice, cached
    F.conv2d(X, W)
    assert len(asked) == 1
    monkeypatch.setenv(autotune.ENV_ENABLE, "1")
    y = F.conv2d(X, W)
    F.conv2d_backward(np.ones_like(y), X, W)
    F.conv2d(X, W)
    assert len(asked) == 4
    np.testing.assert_array_equal(y, F.conv2d(X, W, algorithm="direct"))
    monkeypatch.delenv(autotune.ENV_ENABLE)
    F.conv2d(X, W)
    assert len(asked) == 4  # back to the heuristic's choice kept in the plan


def test_memory_bound_rechecked_per_thread_count_and_above_the_query_size(empty_cache, monkeypatch):
    checks = []
    real = fconv._check_memory
    monkeypatch.setattr(fconv, "_check_memory", lambda *a, **k: checks.append(a[3]) or real(*a, **k))
    gy = np.ones((2, 6, 6, 6), np.float32)
    for _ in range(3):
        F.conv2d(X, W)
        F.conv2d_backward(gy, X, W)
    assert len(checks) == 2  # once forward, once backward
    previous = convcore.set_num_threads(convcore.get_num_threads() + 1)
    try:
        F.conv2d(X, W)
        F.conv2d(X, W)
    finally:
        convcore.set_num_threads(previous)
    assert len(checks) == 3
    # A call big enough to ask the machine for free memory asks every time.
    monkeypatch.setattr(_validation, "_QUERY_MEMORY_ABOVE", 0)
    monkeypatch.setattr(_validation, "available_memory", lambda: 2**40)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    F.conv2d(x, W)
    F.conv2d(x, W)
    monkeypatch.setattr(_validation, "available_memory", lambda: 16)
    with pytest.raises(MemoryError, match="conv2d: output and scratch would need"):
        F.conv2d(x, W)


def test_cache_stays_bounded(empty_cache, monkeypatch):
    monkeypatch.setattr(fconv, "_PLAN_CACHE_SIZE", 4)
    w = np.ones((2, 1, 1, 1), np.float32)
    for h in range(1, 11):
        x = np.full((1, 1, h, 3), float(h), np.float32)
        np.testing.assert_array_equal(F.conv2d(x, w), np.full((1, 2, h, 3), float(h), np.float32))
        assert len(fconv._plans) <= 4


def test_layer_geometry_reassigned_between_calls(empty_cache):
    conv = nn.Conv2d(4, 6, 3, padding=1, rng=0)
    y1 = conv(X)
    conv.stride = (2, 2)
    y2 = conv(X)
    np.testing.assert_allclose(y2, y1[:, :, ::2, ::2], rtol=1e-6, atol=1e-6)
    conv.stride = 2.0
    with pytest.raises(TypeError, match="conv2d: stride must be an int"):
        conv(X)


def test_no_grad_on_another_thread_does_not_stop_this_threads_cache():
    import threading
    conv = nn.Conv2d(4, 6, 3, rng=0)
    inside, release = threading.Event(), threading.Event()

    def other():
        with convcore.no_grad():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    try:
        assert inside.wait(10)
        conv(X)
        assert conv._cache is not None  # this thread still has gradients on
        with convcore.no_grad():
            conv(X)
            assert conv._cache is None
    finally:
        release.set()
        t.join()
