"""Fused layers between convolutions (convcore.nn._fusion and the kernels
behind it): every fused path against the unfused one (fusion turned off,
the layers run one by one), forward and backward, train and eval, both
dtypes; the eval-mode fold cache and what invalidates it; the fallbacks;
1 vs 2 threads."""
import copy
import sys
from collections import OrderedDict

import numpy as np
import pytest

import convcore
import convcore.functional as F
from convcore import nn
from convcore.nn import _fusion
from convcore.optim import SGD
from nn_helpers import check_module_gradients

import convcore.models.resnet  # noqa: F401  (the module, not the function)
resnet = sys.modules["convcore.models.resnet"]

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture(autouse=True)
def fusion_on():
    previous = nn.set_fusion(True)
    yield
    nn.set_fusion(previous)


def _randomise_bn(model, rng):
    """Non-trivial affine parameters and running statistics."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            if m.weight is not None:
                m.weight.data = (rng.standard_normal(c) * 0.5 + 1).astype(m.weight.dtype)
                m.bias.data = (rng.standard_normal(c) * 0.3).astype(m.bias.dtype)
            if m.running_mean is not None:
                m.running_mean[...] = rng.standard_normal(c) * 0.2
                m.running_var[...] = rng.random(c) + 0.5
                m.bump_buffers()
    return model


def _step(model, x, gy, train):
    """Forward + backward; returns output, input grad, parameter grads,
    the state dict (running statistics) afterwards, and the upstream
    gradient (`gy` or, when it is a Generator, drawn for the output)."""
    model.train(train)
    model.zero_grad()
    x0 = x.copy()
    y = model(x)
    if isinstance(gy, np.random.Generator):
        gy = gy.standard_normal(y.shape).astype(y.dtype)
    gy0 = gy.copy()
    gx = model.backward(gy)
    np.testing.assert_array_equal(x, x0)     # the caller's arrays are untouched
    np.testing.assert_array_equal(gy, gy0)
    grads = OrderedDict((k, None if p.grad is None else p.grad.copy())
                        for k, p in model.named_parameters())
    return y, gx, grads, model.state_dict(), gy


def _compare(model, x, train, rng, steps=2):
    """Run `model` fused and a deep copy unfused, `steps` times, and check
    every result agrees."""
    ref = copy.deepcopy(model)
    tol = TOL[x.dtype.type]
    for _ in range(steps):
        nn.set_fusion(True)
        got = _step(model, x, rng, train)
        nn.set_fusion(False)
        want = _step(ref, x, got[4], train)
        nn.set_fusion(True)
        for a, b in zip(got[:2], want[:2]):
            if b is None:
                assert a is None
            else:
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_allclose(a, b, **tol)
        # Relative to the largest gradient of the model: some are rounding
        # noise around zero (a conv bias before a training batch norm).
        scale = max(np.abs(g).max() for g in want[2].values() if g is not None)
        scale = scale if scale > 0 else 1.0
        for k in want[2]:
            if want[2][k] is None:
                assert got[2][k] is None, k
                continue
            np.testing.assert_allclose(got[2][k] / scale, want[2][k] / scale,
                                       err_msg=k, equal_nan=False, **tol)
        assert list(got[3]) == list(want[3])
        for k in want[3]:
            np.testing.assert_allclose(got[3][k], want[3][k], err_msg=k, **tol)
    return got


def _steps_of(seq):
    plan = seq._plan()
    return [type(s).__name__ for s in plan] if plan is not None else None


def _nets(dt, rng):
    """(name, model, input) covering every pattern."""
    kw = dict(dtype=dt)
    out = []
    out.append(("conv-bn-relu", nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(8, **kw), nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2, **kw), nn.BatchNorm2d(6, **kw), nn.ReLU()),
        (3, 3, 9, 7)))
    out.append(("conv-bn", nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1, **kw), nn.BatchNorm2d(5, **kw),
        nn.Conv2d(5, 4, 1, bias=False, **kw), nn.BatchNorm2d(4, **kw)), (2, 3, 6, 6)))
    out.append(("conv-relu", nn.Sequential(
        nn.Conv2d(3, 6, 3, **kw), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1, bias=False, **kw), nn.ReLU(),
        nn.Conv2d(5, 4, 1, **kw), nn.ReLU()), (2, 3, 10, 9)))
    out.append(("bn-variants", nn.Sequential(
        nn.Conv2d(3, 4, 3, **kw), nn.BatchNorm2d(4, affine=False, **kw), nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1, **kw),
        nn.BatchNorm2d(5, track_running_stats=False, **kw), nn.ReLU(),
        nn.BatchNorm2d(5, momentum=None, **kw), nn.ReLU(),
        nn.Conv2d(5, 3, 1, **kw), nn.BatchNorm2d(3, eps=0.1, momentum=0.5, **kw)),
        (3, 3, 6, 7)))
    out.append(("linear-relu", nn.Sequential(
        nn.Conv2d(3, 4, 3, **kw), nn.ReLU(), nn.Flatten(), nn.Linear(36, 10, **kw), nn.ReLU(),
        nn.Linear(10, 7, **kw), nn.ReLU(), nn.Linear(7, 3, **kw)), (3, 3, 5, 5)))
    out.append(("bn-relu", nn.Sequential(
        nn.BatchNorm2d(3, **kw), nn.ReLU(), nn.Conv2d(3, 4, 3, **kw),
        nn.MaxPool2d(2), nn.BatchNorm2d(4, **kw), nn.ReLU()), (4, 3, 8, 8)))
    body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False, **kw),
                         nn.BatchNorm2d(4, **kw), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1, bias=False, **kw),
                         nn.BatchNorm2d(4, **kw))
    out.append(("residual-relu", nn.Sequential(
        nn.Residual(body), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 6, 1, **kw), nn.ReLU(),
                                  nn.Conv2d(6, 6, 3, padding=1, **kw)),
                    nn.Conv2d(4, 6, 1, **kw)), nn.ReLU()), (2, 4, 7, 6)))
    for short in ("A", "B"):
        out.append((f"resnet-block-{short}", nn.Sequential(
            resnet.basic_block(4, 4, 1, short, rng=rng, dtype=dt),
            resnet.basic_block(4, 8, 2, short, rng=rng, dtype=dt)), (2, 4, 8, 8)))
    out.append(("bottleneck", nn.Sequential(
        resnet.bottleneck_block(8, 2, 2, rng=rng, dtype=dt)), (2, 8, 6, 6)))
    # ReLU6 (MobileNet-v2's) wherever ReLU fuses; inputs are scaled up in
    # the test so that outputs reach the cap.
    out.append(("relu6", nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(8, **kw), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, **kw), nn.ReLU6(),
        nn.BatchNorm2d(8, **kw), nn.ReLU6(),
        nn.Conv2d(8, 5, 1, **kw), nn.BatchNorm2d(5, **kw)), (2, 3, 7, 6)))
    return out


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_fused_equals_unfused(dt, train):
    rng = np.random.default_rng(0)
    for name, model, shape in _nets(dt, rng):
        _randomise_bn(model, rng)
        x = (rng.standard_normal(shape) * (8 if name == "relu6" else 1)).astype(dt)
        _compare(model, x, train, rng)


def test_plans_find_the_patterns():
    rng = np.random.default_rng(0)
    nets = dict((n, m) for n, m, _ in _nets(np.float32, rng))
    assert _steps_of(nets["conv-bn-relu"]) == ["ConvBN", "ConvBN"]
    assert _steps_of(nets["conv-relu"]) == ["ConvReLU", "MaxPool2d", "ConvReLU", "ConvReLU"]
    assert _steps_of(nets["linear-relu"]) == ["ConvReLU", "Flatten", "LinearReLU",
                                              "LinearReLU", "Linear"]
    assert _steps_of(nets["bn-relu"]) == ["BNReLU", "Conv2d", "MaxPool2d", "BNReLU"]
    assert _steps_of(nets["residual-relu"]) == ["ResidualThenReLU", "ResidualThenReLU"]
    assert _steps_of(nets["relu6"]) == ["ConvBN", "ConvReLU", "BNReLU", "ConvBN"]
    nn.set_fusion(False)
    assert nets["conv-bn-relu"]._plan() is None


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_resnet20_train_and_eval(dt):
    rng = np.random.default_rng(1)
    model = _randomise_bn(resnet.resnet20(rng=0, dtype=dt), rng)
    x = rng.standard_normal((2, 3, 16, 16)).astype(dt)
    _compare(model, x, True, rng)
    _compare(model, x, False, rng)


def test_first_layer_and_frozen_parameters():
    rng = np.random.default_rng(2)
    conv = nn.Conv2d(3, 4, 3, dtype=np.float64)
    conv.first_layer = True
    bn = nn.BatchNorm2d(4, dtype=np.float64)
    bn.weight.requires_grad = False
    model = _randomise_bn(nn.Sequential(conv, bn, nn.ReLU(), nn.Conv2d(4, 2, 1, dtype=np.float64),
                                        nn.ReLU()), rng)
    model[3].weight.requires_grad = False
    x = rng.standard_normal((2, 3, 6, 6))
    for train in (True, False):
        got = _compare(model, x, train, rng, steps=1)
        assert got[1] is None
        assert got[2]["1.weight"] is None and got[2]["3.weight"] is None


def test_folded_eval_gradients_by_finite_differences():
    rng = np.random.default_rng(3)
    model = _randomise_bn(nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64), nn.BatchNorm2d(3, dtype=np.float64),
        nn.ReLU(), nn.Conv2d(3, 2, 3, dtype=np.float64), nn.BatchNorm2d(2, dtype=np.float64)),
        rng).eval()
    x = rng.standard_normal((2, 2, 5, 5))
    check_module_gradients(model, x, rng)
    assert _steps_of(model) == ["ConvBN", "ConvBN"]


# -- the eval-mode fold cache ------------------------------------------------

def _eval_pair():
    rng = np.random.default_rng(4)
    model = _randomise_bn(nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)), rng)
    return model, rng.standard_normal((2, 3, 6, 6)).astype(np.float32)


def _check_eval(model, x):
    model.eval()
    y = model(x)
    nn.set_fusion(False)
    want = model(x)
    nn.set_fusion(True)
    np.testing.assert_allclose(y, want, **TOL[np.float32])
    return y


def _fold_key(model):
    return list(model._plan()[0].folded._key)


def test_fold_cache_reused_and_user_params_untouched():
    model, x = _eval_pair()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    data = [p.data for p in model.parameters()]
    _check_eval(model, x)
    step = model._plan()[0]
    cached = step.folded._value
    _check_eval(model, x)
    assert step.folded._value is cached           # nothing changed: reused
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert all(a is p.data for a, p in zip(data, model.parameters()))


def test_fold_cache_invalidated_by_optimizer_step():
    model, x = _eval_pair()
    y0 = _check_eval(model, x)
    key = _fold_key(model)
    model.train()
    model(x)
    model.backward(np.ones((2, 2, 6, 6), np.float32))
    SGD(model.parameters(), lr=0.1).step()
    y1 = _check_eval(model, x)
    assert _fold_key(model) != key
    assert np.abs(y1 - y0).max() > 1e-3


def test_fold_cache_invalidated_by_optimizer_step_in_eval():
    # no training forward in between: only the parameter versions change
    model, x = _eval_pair()
    y0 = _check_eval(model, x)
    model.backward(np.ones((2, 2, 6, 6), np.float32))
    SGD(model.parameters(), lr=0.1).step()
    y1 = _check_eval(model, x)
    assert np.abs(y1 - y0).max() > 1e-3


def test_fold_cache_invalidated_by_load_state_dict():
    model, x = _eval_pair()
    other, _ = _eval_pair()
    _randomise_bn(other, np.random.default_rng(9))
    for p in other.parameters():
        p.data = p.data * 1.5
    y0 = _check_eval(model, x)
    model.load_state_dict(other.state_dict())   # in place: same arrays
    y1 = _check_eval(model, x)
    np.testing.assert_allclose(y1, other.eval()(x), **TOL[np.float32])
    assert np.abs(y1 - y0).max() > 1e-3


def test_fold_cache_invalidated_by_data_assignment_and_bump():
    model, x = _eval_pair()
    y0 = _check_eval(model, x)
    model[0].weight.data = model[0].weight.data * 2
    y1 = _check_eval(model, x)
    assert np.abs(y1 - y0).max() > 1e-3
    # an in-place write is seen after bump() (documented)
    model[1].bias.data += 1
    model[1].bias.data[...] *= 3   # in place, not seen until bump()
    model[1].bias.bump()
    _check_eval(model, x)
    model[1].running_var[...] *= 4
    model[1].bump_buffers()
    _check_eval(model, x)


def test_fold_cache_invalidated_by_training_forward():
    model, x = _eval_pair()
    _check_eval(model, x)
    model.train()
    with convcore.no_grad():
        model(x * 3 + 1)   # moves the running statistics
    _check_eval(model, x)


def test_parameter_version():
    p = nn.Parameter(np.zeros(3, np.float32))
    v = p.version
    p.data = np.ones(3, np.float32)
    assert p.version > v
    v = p.version
    p.data -= 1          # augmented assignment goes through the setter too
    assert p.version > v
    v = p.version
    p.bump()
    assert p.version == v + 1
    p.grad = np.ones(3, np.float32)
    v = p.version
    SGD([p], lr=0.1).step()
    assert p.version > v
    m = nn.Linear(2, 2)
    v = m.weight.version
    m.load_state_dict(m.state_dict())
    assert m.weight.version > v
    bn = nn.BatchNorm2d(2)
    v = bn.buffers_version
    bn.load_state_dict(bn.state_dict())
    assert bn.buffers_version > v


# -- fallbacks ---------------------------------------------------------------

def test_fallbacks_run_the_modules():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    # LeakyReLU is not fused
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.2))
    assert seq._plan() is None
    _compare(seq, x, True, rng, steps=1)
    # a forward replaced on the instance is honoured
    relu = nn.ReLU()
    calls = []
    orig = relu.forward

    def spy(v):
        calls.append(1)
        return orig(v)
    relu.forward = spy
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), relu)
    y = seq(x)
    seq.backward(np.ones_like(y))
    assert calls == [1]
    # ... on a Residual before a ReLU too
    res = nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)))
    calls.clear()
    orig_res = res.forward

    def spy_res(v):
        calls.append(2)
        return orig_res(v)
    res.forward = spy_res
    seq = nn.Sequential(res, nn.ReLU())
    y = seq(x)
    seq.backward(np.ones_like(y))
    assert calls == [2]
    # a ReLU subclass is not a ReLU for fusion
    class MyReLU(nn.ReLU):
        def forward(self, v):
            return super().forward(v) * 2
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), MyReLU())
    assert seq._plan() is None


def test_dtype_mismatch_falls_back_with_the_unfused_error():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    x = np.zeros((1, 3, 5, 5), np.float64)
    with pytest.raises(TypeError, match="dtype"):
        seq(x)
    nn.set_fusion(False)
    with pytest.raises(TypeError, match="dtype"):
        seq(x)


def test_children_changed_rebuilds_plan():
    rng = np.random.default_rng(6)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert _steps_of(seq) == ["ConvReLU"]
    seq.add_module("1", nn.Sigmoid())
    assert seq._plan() is None
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    assert (seq(x) > 0).all()


def test_structure_unchanged():
    rng = np.random.default_rng(7)
    model = resnet.resnet20(rng=0)
    nn.set_fusion(False)
    keys, r, s = list(model.state_dict()), repr(model), str(model.summary((3, 16, 16)))
    n = len(model.parameters())
    nn.set_fusion(True)
    model(rng.standard_normal((1, 3, 16, 16)).astype(np.float32))
    assert list(model.state_dict()) == keys
    assert repr(model) == r
    assert str(model.summary((3, 16, 16))) == s
    assert len(model.parameters()) == n


def test_no_grad_keeps_nothing():
    rng = np.random.default_rng(8)
    model = resnet.resnet20(rng=0)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    for train in (True, False):
        model.train(train)
        with convcore.no_grad():
            model(x)
        for m in model.modules():
            assert m._cache is None
            assert m.__dict__.get("_fused_relu") is None
            plan = m.__dict__.get("_fusion_plan")
            if plan and plan[1]:
                assert all(s._cache is None for s in plan[1] if isinstance(s, _fusion.Step))
        with pytest.raises(RuntimeError):
            model.backward(np.ones((1, 10), np.float32))


# -- functional and kernels ----------------------------------------------------

@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batch_norm_relu_matches_unfused(dt, train):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 5, 4, 6)).astype(dt)
    r = rng.standard_normal(x.shape).astype(dt)
    w, b = rng.standard_normal(5).astype(dt), rng.standard_normal(5).astype(dt)
    gy = rng.standard_normal(x.shape).astype(dt)
    for res in (None, r):
        rm, rv = np.zeros(5, dt), np.ones(5, dt)
        rm2, rv2 = rm.copy(), rv.copy()
        y0, m0, i0 = F.batch_norm(x, rm, rv, w, b, training=train, return_stats=True)
        z0 = F.relu(y0 if res is None else y0 + res)
        y1, m1, i1 = F.batch_norm_relu(x, rm2, rv2, w, b, training=train, residual=res,
                                       return_stats=True)
        np.testing.assert_array_equal(y1, z0)     # bit for bit
        np.testing.assert_array_equal(rm2, rm)
        np.testing.assert_array_equal(rv2, rv)
        g0 = F.relu_backward(gy, z0)
        want = F.batch_norm_backward(g0, x, m0, i0, w, training=train)
        got = F.batch_norm_relu_backward(gy, y1, x, m1, i1, w, training=train,
                                         residual_grad=True)
        for a, e in zip(got[:3], want):
            np.testing.assert_allclose(a, e, **TOL[dt])
        np.testing.assert_array_equal(got[3], g0)
        gy2 = gy.copy()
        got2 = F.batch_norm_relu_backward(gy2, y1, x, m1, i1, w, training=train,
                                          overwrite_grad_y=True)
        assert got2[0] is gy2                      # in place when allowed
        np.testing.assert_array_equal(got2[0], got[0])


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_bias_relu_and_add_relu(dt):
    rng = np.random.default_rng(11)
    y = rng.standard_normal((2, 4, 3, 5)).astype(dt)
    b = rng.standard_normal(4).astype(dt)
    y[0, 0, 0, 0] = np.nan
    want = F.relu(y + b[:, None, None])
    got = y.copy()
    assert F.bias_relu_(got, b) is got
    np.testing.assert_array_equal(got, want)   # NaN kept, bit for bit
    got_nb = y.copy()
    np.testing.assert_array_equal(F.bias_relu_(got_nb), F.relu(y))
    gy = rng.standard_normal(y.shape).astype(dt)
    gy0 = gy.copy()
    gx, gb = F.bias_relu_backward(gy, want)
    np.testing.assert_array_equal(gy, gy0)
    g0 = F.relu_backward(gy, want)
    np.testing.assert_array_equal(gx, g0)
    np.testing.assert_allclose(gb, g0.sum(axis=(0, 2, 3), dtype=np.float64), **TOL[dt])
    gx2, gb2 = F.bias_relu_backward(gy, want, bias=False, overwrite_grad_y=True)
    assert gx2 is gy and gb2 is None
    np.testing.assert_array_equal(gx2, g0)
    r = y.copy()
    assert F.relu_(r) is r
    np.testing.assert_array_equal(r, F.relu(y))
    g2 = gy.copy()
    assert F.relu_backward_(g2, r) is g2
    np.testing.assert_array_equal(g2, F.relu_backward(gy, r))
    a, c = y.copy(), rng.standard_normal(y.shape).astype(dt)
    np.testing.assert_array_equal(F.add_relu(a, c), F.relu(a + c))
    np.testing.assert_array_equal(a, y)



@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_gradient_sum_is_numpys_sum_bit_for_bit(dt):
    """The containers' sum of two branch gradients runs on the threads
    where it can, and is a + b bit for bit (NaN and infinities included),
    at 1 and 2 threads; other shapes, dtypes and layouts fall back to a + b;
    neither operand is changed."""
    from convcore.functional.fused import gradient_sum
    rng = np.random.default_rng(12)
    a = rng.standard_normal((3, 5, 17, 19)).astype(dt) * 1e3
    b = rng.standard_normal(a.shape).astype(dt)
    a[0, 0, 0, :4] = [np.nan, np.inf, -np.inf, np.inf]
    b[0, 0, 0, :4] = [1.0, 2.0, 3.0, -np.inf]
    a0, b0 = a.copy(), b.copy()
    with np.errstate(invalid="ignore"):     # inf + -inf, as NumPy's own sum
        want = a0 + b0
    previous = convcore.set_num_threads(1)
    try:
        sums = [gradient_sum(a, b)]
        convcore.set_num_threads(2)
        sums.append(gradient_sum(a, b))
    finally:
        convcore.set_num_threads(previous)
    for got in sums:
        assert got.dtype == dt and got.shape == a.shape
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)
    for x, y in ((a[:, :, ::2], b[:, :, ::2]), (a, b.astype(np.float16)),
                 (a[0, 0, 0], b[0, 0, 0]), (a, b[:1])):
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(gradient_sum(x, y), x + y)


def test_functional_errors():
    x = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="residual"):
        F.batch_norm_relu(x, None, None, training=True, residual=np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(TypeError, match="residual"):
        F.batch_norm_relu(x, None, None, training=True, residual=np.zeros(x.shape))
    with pytest.raises(ValueError, match="writeable"):
        F.bias_relu_(x[:, :, ::2])
    with pytest.raises(ValueError, match="bias"):
        F.bias_relu_(x.copy(), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="grad_y"):
        F.bias_relu_backward(np.zeros((2, 3, 4, 5), np.float32), x)
    with pytest.raises(ValueError, match="y of shape"):
        F.batch_norm_relu_backward(x, np.zeros((2, 3, 4, 5), np.float32), x,
                                   np.zeros(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="differ"):
        F.add_relu(x, np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="writeable"):
        F.relu_(x[:, :, ::2])
    ro = x.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        F.relu_backward_(ro, x)


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_one_vs_two_threads_bitwise(dt):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 16, 48, 48)).astype(dt)   # large enough for 2 threads
    r = rng.standard_normal(x.shape).astype(dt)
    gy = rng.standard_normal(x.shape).astype(dt)
    w, b = rng.standard_normal(16).astype(dt), rng.standard_normal(16).astype(dt)

    def run():
        rm, rv = np.zeros(16, dt), np.ones(16, dt)
        y, m, i = F.batch_norm_relu(x, rm, rv, w, b, training=True, residual=r,
                                    return_stats=True)
        g = F.batch_norm_relu_backward(gy, y, x, m, i, w, residual_grad=True)
        e = F.bias_relu_(x.copy(), b)
        gb = F.bias_relu_backward(gy, e)
        return (y, rm, rv) + g + (e,) + gb + (F.add_relu(x, r),)

    previous = convcore.set_num_threads(1)
    try:
        one = run()
        convcore.set_num_threads(2)
        two = run()
    finally:
        convcore.set_num_threads(previous)
    for a, c in zip(one, two):
        np.testing.assert_array_equal(a, c)


def test_fused_network_one_vs_two_threads_bitwise():
    rng = np.random.default_rng(13)
    model = _randomise_bn(nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        resnet.basic_block(16, 16, 1, rng=rng), nn.Conv2d(16, 16, 1), nn.ReLU()), rng)
    x = rng.standard_normal((4, 3, 40, 40)).astype(np.float32)   # >= 2 threads' work
    gy = rng.standard_normal((4, 16, 40, 40)).astype(np.float32)
    results = []
    previous = convcore.set_num_threads(1)
    try:
        for n in (1, 2):
            convcore.set_num_threads(n)
            m = copy.deepcopy(model)
            out = []
            for train in (True, False):
                y, gx, grads, state, _ = _step(m, x, gy, train)
                out += [y, gx] + list(grads.values()) + list(state.values())
            results.append(out)
    finally:
        convcore.set_num_threads(previous)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_capped_kernels_equal_relu6_of_the_unfused(dt):
    """max_value=6: bit for bit relu6 after batch_norm / the bias add, and
    the gradient zero at and beyond the cap (as relu6_backward)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 4, 5, 6)) * 4 + 3).astype(dt)
    rm, rv = np.zeros(4, dt), np.ones(4, dt)
    g, b = (rng.random(4) + 0.5).astype(dt), (rng.standard_normal(4) + 3).astype(dt)
    for train in (True, False):
        y, mean, invstd = F.batch_norm_relu(x, rm.copy(), rv.copy(), g, b, training=train,
                                            return_stats=True, max_value=6.0)
        z = F.batch_norm(x, rm.copy(), rv.copy(), g, b, training=train)
        np.testing.assert_array_equal(y, F.relu6(z))
        assert (y == 6).any() and (y == 0).any()
        gy = rng.standard_normal(x.shape).astype(dt)
        gx, gw, gb = F.batch_norm_relu_backward(gy, y, x, mean, invstd, g, training=train,
                                                max_value=6.0)
        rx, rw, rb = F.batch_norm_backward(F.relu6_backward(gy, y), x, mean, invstd, g,
                                           training=train)
        np.testing.assert_allclose(gx, rx, **TOL[dt])
        np.testing.assert_allclose(gb, rb, **TOL[dt])
    conv = rng.standard_normal((2, 4, 3, 3)).astype(dt) * 5
    bias = rng.standard_normal(4).astype(dt)
    y = F.bias_relu_(conv.copy(), bias, max_value=6.0)
    np.testing.assert_array_equal(y, F.relu6(conv + bias[None, :, None, None]))
    gy = rng.standard_normal(y.shape).astype(dt)
    gx, gbias = F.bias_relu_backward(gy, y, max_value=6.0)
    np.testing.assert_array_equal(gx, F.relu6_backward(gy, y))
    with pytest.raises(ValueError, match="max_value"):
        F.bias_relu_(conv.copy(), bias, max_value=-1)
