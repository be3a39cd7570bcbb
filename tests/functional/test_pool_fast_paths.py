"""Pooling's fast paths: the cache of checked pooling geometry
(functional/pooling.py) and MaxPool2d skipping the argmax indices when
nothing is kept for backward. Same results, same errors."""
import numpy as np
import pytest

import convcore
from convcore import F, nn
from convcore.functional import pooling as fpool
from ref_pool import max_pool2d as max_pool2d_ref
from test_pooling import BAD, X

rng = np.random.default_rng(11)


@pytest.fixture
def empty_cache():
    fpool._specs.clear()
    yield
    fpool._specs.clear()


def _awkward(shape, dtype=np.float32):
    """Ties, NaN, +-inf and plain values, so every branch of the max shows."""
    x = rng.integers(-3, 4, size=shape).astype(dtype)  # many ties
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=(3, max(1, flat.size // 40)), replace=False)
    flat[picks[0]] = np.nan
    flat[picks[1]] = -np.inf
    flat[picks[2]] = np.inf
    return x


@pytest.mark.parametrize("k,s,p,d,ceil", [(2, 2, 0, 1, False), (3, 2, 1, 1, True),
                                          (3, 1, 1, 1, False), (3, 1, 1, 2, False),
                                          ((2, 3), (1, 2), (1, 0), (2, 1), True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_layer_under_no_grad_gives_the_training_output(k, s, p, d, ceil, dtype):
    layer = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil, dtype=dtype)
    x = _awkward((2, 3, 9, 8), dtype)
    y_grad = layer(x)
    gx = layer.backward(np.ones_like(y_grad))
    with convcore.no_grad():
        y_inf = layer(x)
    np.testing.assert_array_equal(y_inf, y_grad)  # NaN in the same places too
    # Integer values and infinities: exact in either precision.
    np.testing.assert_array_equal(y_inf, max_pool2d_ref(x, k, s, p, d, ceil)[0])
    assert layer._cache is None  # nothing kept: backward must refuse
    with pytest.raises(RuntimeError, match="nothing saved for backward"):
        layer.backward(np.ones_like(y_inf))
    assert gx.shape == x.shape


@pytest.mark.parametrize("fn,args,kwargs,exc,fragment", BAD,
                         ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments_after_good_calls_are_cached(empty_cache, fn, args, kwargs, exc, fragment):
    gy = np.zeros((1, 2, 2, 2), np.float32)
    for k, extra in ((2, {}), (3, {"dilation": 1}), (2, {"ceil_mode": True}),
                     (3, {"stride": 1, "padding": 1}), ((2, 2), {"stride": None})):
        F.max_pool2d(X, k, **extra)
    F.avg_pool2d(X, 2)
    F.avg_pool2d(X, 3, 1, 1)
    F.avg_pool2d_backward(gy, X.shape, 2)
    assert fpool._specs
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert fragment in str(info.value) and fn.__name__ in str(info.value)


@pytest.mark.parametrize("arg,good,bad", [("kernel_size", 2, 2.0), ("kernel_size", 2, True),
                                          ("stride", 1, True), ("stride", (1, 1), (1.0, 1)),
                                          ("dilation", 1, True), ("padding", 0, False)])
def test_equal_values_of_other_types_do_not_share_an_int_spec(empty_cache, arg, good, bad):
    args = dict(kernel_size=2, stride=1, padding=0, dilation=1)
    F.max_pool2d(X, **{**args, arg: good})
    with pytest.raises(TypeError, match=f"max_pool2d: {arg} must be an int"):
        F.max_pool2d(X, **{**args, arg: bad})


def test_ceil_mode_must_still_be_a_bool_after_a_cached_call(empty_cache):
    F.max_pool2d(X, 2, ceil_mode=True)
    with pytest.raises(TypeError, match="ceil_mode must be a bool"):
        F.max_pool2d(X, 2, ceil_mode=1)


def test_cached_results_equal_uncached_and_shapes_get_their_own_spec(empty_cache, monkeypatch):
    outs = {}
    for shape in ((2, 3, 9, 8), (2, 3, 10, 8), (1, 3, 9, 8)):
        x = rng.standard_normal(shape).astype(np.float32)
        fpool._specs.clear()
        first = (F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True),
                 F.avg_pool2d(x, 3, 2, 1, True, False))
        for _ in range(2):
            (y, idx), a = (F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True),
                           F.avg_pool2d(x, 3, 2, 1, True, False))
            np.testing.assert_array_equal(y, first[0][0])
            np.testing.assert_array_equal(idx, first[0][1])
            np.testing.assert_array_equal(a, first[1])
            np.testing.assert_array_equal(y, max_pool2d_ref(x.astype(np.float64), 3, 2, 1, 1, True)[0])
        outs[shape] = y.shape
    assert outs[(2, 3, 9, 8)] != outs[(2, 3, 10, 8)]
    monkeypatch.setattr(fpool, "_SPEC_CACHE_SIZE", 2)
    for h in range(4, 10):
        F.avg_pool2d(np.ones((1, 1, h, 4), np.float32), 2)
        assert len(fpool._specs) <= 2


def test_pool_outputs_of_consecutive_calls_never_alias():
    layer = nn.MaxPool2d(2)
    x1 = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    x2 = -x1
    for grad in (True, False):
        if grad:
            y1 = layer(x1); kept = y1.copy(); y2 = layer(x2)
        else:
            with convcore.no_grad():
                y1 = layer(x1); kept = y1.copy(); y2 = layer(x2)
        assert not np.shares_memory(y1, y2)
        np.testing.assert_array_equal(y1, kept)
