"""Winograd's transformed weights are reused while the weights do not
change, and recomputed when they do (algorithms.DERIVED)."""
import gc

import numpy as np
import pytest

from convcore import algorithms
from convcore.algorithms import DERIVED, DerivedWeights, WinogradConv
from convcore.functional._conv_spec import conv_spec
from ref_conv import conv2d_ref


def _spec(x, w, padding=1):
    return conv_spec(x.shape, w.shape, x.dtype, 1, padding, 1, 1)


@pytest.fixture(autouse=True)
def _fresh():
    DERIVED.clear()
    yield
    DERIVED.clear()


def test_cached_forward_equals_uncached_and_follows_changes(rng):
    x = rng.standard_normal((2, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    spec = _spec(x, w)
    W = WinogradConv()
    y0 = np.empty(spec.out_shape, np.float32)
    W.forward(x, w, np.empty(0, np.float32), y0, spec)  # no token: nothing kept
    assert len(DERIVED) == 0
    y1 = np.empty_like(y0)
    W.forward(x, w, np.empty(0, np.float32), y1, spec, weight_version=7)
    assert len(DERIVED) == 1
    y2 = np.empty_like(y0)
    W.forward(x, w, np.empty(0, np.float32), y2, spec, weight_version=7)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(y2, y0)
    # Same version but the values changed behind the token: stale by design
    # (the token is the contract); a new token recomputes.
    w *= 2
    y3 = np.empty_like(y0)
    W.forward(x, w, np.empty(0, np.float32), y3, spec, weight_version=8)
    np.testing.assert_allclose(y3, conv2d_ref(x.astype(np.float64), w.astype(np.float64),
                                              None, 1, 1), rtol=1e-3, atol=1e-3)


def test_backward_data_uses_its_own_transform(rng):
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float64)
    w = rng.standard_normal((12, 8, 3, 3))
    spec = _spec(x, w)
    gy = rng.standard_normal(spec.out_shape)
    W = WinogradConv()
    y = np.empty(spec.out_shape)
    W.forward(x, w, np.empty(0), y, spec, weight_version=1)
    gx = np.empty_like(x)
    W.backward(gy, x, w, gx, np.empty((0, 0, 0, 0)), True, False, spec, weight_version=1)
    gx_ref = np.empty_like(x)
    W.backward(gy, x, w, gx_ref, np.empty((0, 0, 0, 0)), True, False, spec)
    np.testing.assert_array_equal(gx, gx_ref)


def test_entries_die_with_their_arrays_and_ids_are_not_confused(rng):
    d = DerivedWeights()
    calls = []

    def make(tag):
        return lambda: (calls.append(tag) or True, np.zeros(4))

    w = np.ones(3)
    d.get(w, 1, "k", make("a"))
    d.get(w, 1, "k", make("b"))
    assert calls == ["a"]
    del w
    gc.collect()
    assert len(d) == 0
    w2 = np.ones(3)  # may reuse the id: must not find "a"
    d.get(w2, 1, "k", make("c"))
    assert calls == ["a", "c"]


def test_bytes_are_bounded(rng, monkeypatch):
    d = DerivedWeights()
    monkeypatch.setattr(DerivedWeights, "MAX_BYTES", 1000)
    arrays = [np.ones(1) for _ in range(5)]
    for a in arrays:
        d.get(a, 0, "k", lambda: (True, np.zeros(50)))  # 400 bytes each
    assert d._bytes <= 1000 and len(d) == 2


def test_layer_cache_follows_optimizer_steps_state_dicts_and_assignment(rng):
    """A Conv2d on the Winograd path: eval outputs equal a fresh
    computation after every kind of weight change."""
    import convcore
    from convcore import nn, optim
    conv = nn.Conv2d(16, 16, 3, padding=1, algorithm="winograd", rng=0)
    x = rng.standard_normal((2, 16, 12, 12)).astype(np.float32)

    def fresh():
        return convcore.F.conv2d(x, conv.weight.data.copy(), conv.bias.data.copy(), 1, 1,
                                 algorithm="winograd")

    with convcore.no_grad():
        np.testing.assert_array_equal(conv(x), fresh())
        assert len(DERIVED) == 1
        np.testing.assert_array_equal(conv(x), fresh())
    # an optimizer step (in place)
    y = conv(x)
    conv.backward(np.ones_like(y))
    optim.SGD(conv.parameters(), lr=0.1).step()
    with convcore.no_grad():
        np.testing.assert_array_equal(conv(x), fresh())
    # load_state_dict
    sd = {k: v * 0.5 for k, v in conv.state_dict().items()}
    conv.load_state_dict(sd)
    with convcore.no_grad():
        np.testing.assert_array_equal(conv(x), fresh())
    # assignment to .data
    conv.weight.data = conv.weight.data[::-1].copy()
    with convcore.no_grad():
        np.testing.assert_array_equal(conv(x), fresh())
    # an in-place write announced with bump()
    conv.weight.data[0] = 0
    conv.weight.bump()
    with convcore.no_grad():
        np.testing.assert_array_equal(conv(x), fresh())
