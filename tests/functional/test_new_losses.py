"""cross_entropy's ignore_index, nll_loss, l1_loss, smooth_l1_loss and
huber_loss, and their modules: values against float64 loop references,
gradients by finite differences, torch peers, argument checks."""
import math

import numpy as np
import pytest

import convcore.functional as F
from convcore import nn
from gradcheck import directional_check
from bad_arguments import bad_argument_test

REDUCTIONS = ["mean", "sum", "none"]
SHAPES = [(6, 4), (2, 3), (3, 5, 2, 2)]
IGNORE = -100


def _log_softmax_row(z):
    z = z - z.max()
    return z - math.log(np.exp(z).sum())


def ref_cross_entropy(logits, target, weight, eps, reduction, ignore_index=IGNORE):
    """torch's definition sample by sample, in float64: ignored samples give 0;
    "mean" divides by sum w[t] over the kept samples."""
    x = np.moveaxis(np.asarray(logits, np.float64), 1, -1)
    C = x.shape[-1]
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    nll, smooth = np.zeros(target.shape), np.zeros(target.shape)
    kept_weight = 0.0
    for idx in np.ndindex(*target.shape):
        t = int(target[idx])
        if t == ignore_index:
            continue
        logp = _log_softmax_row(x[idx])
        nll[idx] = -w[t] * logp[t]
        smooth[idx] = -sum(w[c] * logp[c] for c in range(C))
        kept_weight += w[t]
    if reduction == "none":
        return (1 - eps) * nll + eps / C * smooth
    if reduction == "sum":
        return (1 - eps) * nll.sum() + eps / C * smooth.sum()
    return ((1 - eps) * nll.sum() + eps / C * smooth.sum()) / kept_weight


def _case(rng, shape, weighted, dtype=np.float64):
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    t = rng.integers(0, shape[1], size=shape[:1] + shape[2:])
    t.flat[::3] = IGNORE          # every third target ignored, the first one among them
    w = rng.uniform(0.2, 2.0, shape[1]).astype(dtype) if weighted else None
    return x, t, w


def _upstream(rng, reduction, shape):
    return rng.standard_normal(shape) if reduction == "none" else float(rng.uniform(0.5, 2))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_ignore_index_value_and_gradient(rng, shape, weighted, smoothing,
                                                       reduction):
    x, t, w = _case(rng, shape, weighted)
    t_before = t.copy()
    loss = F.cross_entropy(x, t, w, smoothing, reduction)
    np.testing.assert_allclose(loss, ref_cross_entropy(x, t, w, smoothing, reduction),
                               rtol=1e-12, atol=1e-13)
    up = _upstream(rng, reduction, t.shape)
    g = F.cross_entropy_backward(x, t, w, smoothing, reduction, grad=up)
    assert not np.moveaxis(g, 1, -1)[t == IGNORE].any()   # ignored: no gradient
    directional_check(lambda a: np.asarray(F.cross_entropy(a, t, w, smoothing, reduction)),
                      (x,), (g,), np.asarray(up), rng)
    np.testing.assert_array_equal(t, t_before)


def test_cross_entropy_all_ignored_mean_is_nan_like_torch():
    x = np.zeros((2, 3))
    t = np.array([5, 5])
    assert math.isnan(F.cross_entropy(x, t, ignore_index=5))
    assert F.cross_entropy(x, t, ignore_index=5, reduction="sum") == 0.0
    assert np.isnan(F.cross_entropy_backward(x, t, ignore_index=5)).all()


def test_cross_entropy_ignore_index_inside_the_class_range(rng):
    # a real class can be the ignored one: its samples drop out of the mean
    x = rng.standard_normal((5, 3))
    t = np.array([0, 1, 2, 1, 0])
    kept = t != 1
    expect = F.cross_entropy(x[kept], t[kept])
    assert math.isclose(F.cross_entropy(x, t, ignore_index=1), expect, rel_tol=1e-13)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_nll_loss_value_and_gradient(rng, shape, weighted, reduction):
    x, t, w = _case(rng, shape, weighted)
    logp = np.log(F.softmax(x, axis=1))
    # nll_loss of log-probabilities is cross_entropy of the logits
    np.testing.assert_allclose(F.nll_loss(logp, t, w, reduction=reduction),
                               ref_cross_entropy(x, t, w, 0.0, reduction), rtol=1e-12,
                               atol=1e-13)
    up = _upstream(rng, reduction, t.shape)
    g = F.nll_loss_backward(logp, t, w, reduction=reduction, grad=up)
    directional_check(lambda a: np.asarray(F.nll_loss(a, t, w, reduction=reduction)),
                      (logp,), (g,), np.asarray(up), rng)


def test_nll_loss_by_hand():
    logp = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]))
    t = np.array([0, -100, 2])
    w = np.array([2.0, 1.0, 0.5])
    # (2 * -log 0.5 + 0.5 * -log 0.6) / (2 + 0.5)
    expect = (2 * math.log(2) - 0.5 * math.log(0.6)) / 2.5
    assert math.isclose(F.nll_loss(logp, t, w), expect, rel_tol=1e-14)
    g = F.nll_loss_backward(logp, t, w)
    np.testing.assert_allclose(g, [[-2 / 2.5, 0, 0], [0, 0, 0], [0, 0, -0.5 / 2.5]])


# --- pointwise regression losses ------------------------------------------------------

def ref_pointwise(name, d, param):
    """float64 loops over torch's definitions."""
    out = np.empty(d.shape)
    for i, v in np.ndenumerate(np.asarray(d, np.float64)):
        a = abs(v)
        if name == "l1":
            out[i] = a
        elif name == "smooth_l1":
            out[i] = a if param == 0 else (0.5 * v * v / param if a < param else a - 0.5 * param)
        else:  # huber
            out[i] = 0.5 * v * v if a < param else param * (a - 0.5 * param)
    return out


POINTWISE = {  # name -> (forward, backward, keyword of the parameter, values of it)
    "l1": (F.l1_loss, F.l1_loss_backward, None, [None]),
    "smooth_l1": (F.smooth_l1_loss, F.smooth_l1_loss_backward, "beta", [1.0, 0.3, 0.0]),
    "huber": (F.huber_loss, F.huber_loss_backward, "delta", [1.0, 2.5]),
}
CASES = [(name, p) for name, (_, _, _, params) in POINTWISE.items() for p in params]


def _pointwise_case(rng, shape, dtype=np.float64):
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    t = (2 * rng.standard_normal(shape)).astype(dtype)
    return x, t


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, param", CASES)
def test_pointwise_loss_values(rng, name, param, dtype, reduction):
    forward, _, key, _ = POINTWISE[name]
    kw = {} if key is None else {key: param}
    x, t = _pointwise_case(rng, (3, 4, 5), dtype)
    ref = ref_pointwise(name, x.astype(np.float64) - t, param)
    expect = {"none": ref, "sum": ref.sum(), "mean": ref.mean()}[reduction]
    loss = forward(x, t, reduction, **kw)
    if reduction == "none":
        assert loss.dtype == dtype
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12)
    np.testing.assert_allclose(loss, expect, **tol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, param", CASES)
def test_pointwise_loss_gradients(rng, name, param, reduction):
    forward, backward, key, _ = POINTWISE[name]
    kw = {} if key is None else {key: param}
    x, t = _pointwise_case(rng, (4, 6))
    # away from the kinks at |d| = 0 and |d| = beta/delta, for the differences
    d = x - t
    x = np.where(np.abs(np.abs(d) - (param or 0)) < 1e-3, x + 0.01, x)
    x = np.where(np.abs(x - t) < 1e-3, x + 0.01, x)
    up = _upstream(rng, reduction, x.shape)
    g = backward(x, t, reduction, grad=up, **kw)
    directional_check(lambda a: np.asarray(forward(a, t, reduction, **kw)), (x,), (g,),
                      np.asarray(up), rng)


def test_huber_is_delta_times_smooth_l1(rng):
    x, t = _pointwise_case(rng, (10,))
    assert math.isclose(F.huber_loss(x, t, delta=0.7), 0.7 * F.smooth_l1_loss(x, t, beta=0.7),
                        rel_tol=1e-13)


# --- modules and torch --------------------------------------------------------------

MODULES = {  # id -> (convcore loss, torch loss factory(tnn), kind of target)
    "ce_ignore": (lambda: nn.CrossEntropyLoss(weight=[1.0, 2.0, 0.5, 1.5], label_smoothing=0.1),
                  lambda t, tw: t.CrossEntropyLoss(weight=tw, label_smoothing=0.1), "class"),
    "ce_ignore_unweighted_smooth": (lambda: nn.CrossEntropyLoss(label_smoothing=0.3),
                                    lambda t, tw: t.CrossEntropyLoss(label_smoothing=0.3),
                                    "class"),
    "ce_ignore_custom": (lambda: nn.CrossEntropyLoss(ignore_index=2, reduction="sum"),
                         lambda t, tw: t.CrossEntropyLoss(ignore_index=2, reduction="sum"),
                         "class"),
    "nll": (lambda: nn.NLLLoss(weight=[1.0, 2.0, 0.5, 1.5]),
            lambda t, tw: t.NLLLoss(weight=tw), "class"),
    "nll_none": (lambda: nn.NLLLoss(reduction="none"),
                 lambda t, tw: t.NLLLoss(reduction="none"), "class"),
    "l1": (lambda: nn.L1Loss(), lambda t, tw: t.L1Loss(), "value"),
    "smooth_l1": (lambda: nn.SmoothL1Loss(beta=0.5), lambda t, tw: t.SmoothL1Loss(beta=0.5),
                  "value"),
    "huber_sum": (lambda: nn.HuberLoss("sum", delta=1.5),
                  lambda t, tw: t.HuberLoss("sum", delta=1.5), "value"),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_loss_modules_match_torch(name, rng):
    torch = pytest.importorskip("torch")
    make, make_torch, kind = MODULES[name]
    loss = make()
    x = 2 * rng.standard_normal((8, 4, 3))
    if kind == "class":
        target = rng.integers(0, 4, size=(8, 3))
        target.flat[::4] = loss.ignore_index
        if name.startswith("nll"):
            x = np.log(F.softmax(x, axis=1))
    else:
        target = 2 * rng.standard_normal(x.shape)
    weight = getattr(loss, "weight", None)
    tloss = make_torch(torch.nn, None if weight is None else torch.tensor(weight))
    tx = torch.tensor(x, requires_grad=True)
    tvalue = tloss(tx, torch.tensor(target))
    value = loss(x, target)
    np.testing.assert_allclose(value, tvalue.detach().numpy(), rtol=1e-12, atol=1e-14)
    up = rng.standard_normal(tvalue.shape) if tvalue.ndim else 1.0
    tvalue.backward(torch.tensor(up))
    np.testing.assert_allclose(loss.backward(up), tx.grad.numpy(), rtol=1e-11, atol=1e-14)


X = np.zeros((3, 4))
T = np.array([0, 1, 2])

test_bad_arguments = bad_argument_test([
    (F.cross_entropy, (X, np.array([0, 4, -100])), {}, ValueError,
     "found values in [0, 4] (besides ignore_index=-100)"),
    (F.cross_entropy, (X, np.array([0, -1, 2])), {}, ValueError,
     "target values must be class indices in [0, 4)"),
    (F.cross_entropy, (X, T), {"ignore_index": 1.5}, TypeError, "ignore_index must be an int"),
    (F.nll_loss, (X, T.astype(np.float64)), {}, TypeError,
     "target must hold integer class indices, got dtype float64"),
    (F.nll_loss, (X, T[:2]), {}, ValueError, "input of shape (3, 4) need target shape (3,)"),
    (F.nll_loss, (X, T), {"weight": np.ones(3)}, ValueError, "weight must have shape (4,)"),
    (F.nll_loss_backward, (X, T), {"reduction": "none", "grad": np.ones(2)}, ValueError,
     "grad must have the loss shape (3,)"),
    (F.smooth_l1_loss, (X, X), {"beta": -1.0}, ValueError, "beta must be a finite number >= 0"),
    (F.huber_loss, (X, X), {"delta": 0.0}, ValueError, "delta must be a finite number > 0"),
    (F.l1_loss, (X, X[:2]), {}, ValueError, "target has shape (2, 4) but input has shape (3, 4)"),
    (F.huber_loss_backward, (X, X.astype(np.float32)), {}, TypeError, "target has dtype float32"),
    (lambda: nn.HuberLoss(delta=-2), ValueError, "HuberLoss: delta must be > 0"),
    (lambda: nn.SmoothL1Loss(reduction="avg"), ValueError, "reduction must be 'mean'"),
])
