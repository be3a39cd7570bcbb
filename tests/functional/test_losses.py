"""cross_entropy, mse_loss, binary_cross_entropy_with_logits: values against
float64 references and hand-computed cases, gradients by finite
differences, extreme logits, argument checks, torch peers."""
import math

import numpy as np
import pytest

import convcore.functional as F
import ref_ops
from gradcheck import directional_check
from bad_arguments import bad_argument_test

REDUCTIONS = ["mean", "sum", "none"]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
CE_SHAPES = [(6, 4), (1, 1), (3, 5, 2, 2), (2, 3, 4)]


def _upstream(rng, reduction, shape, dtype=np.float64):
    """A random upstream gradient: per-element for "none", a number otherwise."""
    if reduction == "none":
        return rng.standard_normal(shape).astype(dtype)
    return float(rng.uniform(0.5, 2))


def _ce_case(rng, shape, dtype, weighted):
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    t = rng.integers(0, shape[1], size=shape[:1] + shape[2:])
    w = rng.uniform(0.2, 2.0, shape[1]).astype(dtype) if weighted else None
    return x, t, w


# --- cross entropy -------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", CE_SHAPES)
def test_cross_entropy_matches_reference(rng, shape, weighted, smoothing, reduction, dtype):
    x, t, w = _ce_case(rng, shape, dtype, weighted)
    loss = F.cross_entropy(x, t, w, smoothing, reduction)
    expected = ref_ops.cross_entropy(x, t, w, smoothing, reduction)
    if reduction == "none":
        assert loss.dtype == dtype and loss.shape == t.shape
    else:
        assert isinstance(loss, float)
    np.testing.assert_allclose(loss, expected, **TOL[dtype])


def test_cross_entropy_weighted_mean_by_hand():
    # Two samples, uniform logits over 2 classes: -logp = log 2 for each.
    x = np.zeros((2, 2))
    t = np.array([0, 1])
    w = np.array([1.0, 3.0])
    # sum_i w[t_i] * log2 / sum_i w[t_i] = log 2, not (1+3)/2 * log 2.
    assert math.isclose(F.cross_entropy(x, t, w), math.log(2), rel_tol=1e-14)
    assert math.isclose(F.cross_entropy(x, t, w, reduction="sum"), 4 * math.log(2), rel_tol=1e-14)
    # Smoothing with eps=1: every sample's loss is sum_c w_c log2 / C = 2 log 2,
    # divided by the same sum of target weights (4).
    assert math.isclose(F.cross_entropy(x, t, w, 1.0), 4 * math.log(2) / 4, rel_tol=1e-14)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", CE_SHAPES)
def test_cross_entropy_gradients(rng, shape, weighted, smoothing, reduction):
    x, t, w = _ce_case(rng, shape, np.float64, weighted)
    up = _upstream(rng, reduction, t.shape)
    g = F.cross_entropy_backward(x, t, w, smoothing, reduction, grad=up)
    assert g.shape == x.shape and g.dtype == x.dtype
    directional_check(lambda a: np.asarray(F.cross_entropy(a, t, w, smoothing, reduction)),
                      (x,), (g,), np.asarray(up), rng)


def test_cross_entropy_extreme_logits():
    x = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]], dtype=np.float32)
    t = np.array([0, 0])
    with np.errstate(over="raise", invalid="raise"):
        loss = F.cross_entropy(x, t, reduction="none")
        g = F.cross_entropy_backward(x, t)
    np.testing.assert_allclose(loss, [0.0, 2e4], rtol=1e-6)
    np.testing.assert_allclose(g, [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-7)


def test_cross_entropy_float32_agrees_with_float64(rng):
    x, t, w = _ce_case(rng, (16, 10), np.float64, True)
    for red in REDUCTIONS:
        a = F.cross_entropy(x.astype(np.float32), t, w.astype(np.float32), 0.1, red)
        np.testing.assert_allclose(a, F.cross_entropy(x, t, w, 0.1, red), rtol=1e-5)
        g = F.cross_entropy_backward(x.astype(np.float32), t, w.astype(np.float32), 0.1, red,
                                     grad=np.ones(16, np.float32) if red == "none" else 1.0)
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, F.cross_entropy_backward(
            x, t, w, 0.1, red, grad=np.ones(16) if red == "none" else 1.0), rtol=1e-5, atol=1e-6)


def test_cross_entropy_accepts_any_int_dtype_and_empty_batch(rng):
    x, t, _ = _ce_case(rng, (5, 3), np.float64, False)
    expected = F.cross_entropy(x, t)
    for dt in (np.int8, np.uint8, np.int32, np.uint64):
        assert F.cross_entropy(x, t.astype(dt)) == expected
    assert math.isnan(F.cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64)))
    assert F.cross_entropy_backward(np.zeros((0, 3)), np.zeros(0, np.int64)).shape == (0, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 2, 2)])
def test_cross_entropy_probability_targets(rng, shape, weighted, smoothing, reduction, dtype):
    x, _, w = _ce_case(rng, shape, dtype, weighted)
    q = rng.dirichlet(np.ones(shape[1]), size=shape[:1] + shape[2:])   # (N, ..., C)
    q = np.ascontiguousarray(np.moveaxis(q, -1, 1)).astype(dtype)
    loss = F.cross_entropy(x, q, w, smoothing, reduction)
    np.testing.assert_allclose(loss, ref_ops.cross_entropy_probs(x, q, w, smoothing, reduction),
                               **TOL[dtype])
    if dtype == np.float64:
        up = _upstream(rng, reduction, q.shape[:1] + q.shape[2:])
        g = F.cross_entropy_backward(x, q, w, smoothing, reduction, grad=up)
        directional_check(lambda a: np.asarray(F.cross_entropy(a, q, w, smoothing, reduction)),
                          (x,), (g,), np.asarray(up), rng)


def test_one_hot_probabilities_equal_indices_unweighted(rng):
    x, t, _ = _ce_case(rng, (6, 5), np.float64, False)
    q = np.eye(5)[t]
    for ls in (0.0, 0.3):
        assert math.isclose(F.cross_entropy(x, q, label_smoothing=ls),
                            F.cross_entropy(x, t, label_smoothing=ls), rel_tol=1e-13)
        np.testing.assert_allclose(F.cross_entropy_backward(x, q, label_smoothing=ls),
                                   F.cross_entropy_backward(x, t, label_smoothing=ls), rtol=1e-13)


# --- mse -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(4, 3), (1,), (2, 3, 2, 2)])
def test_mse_matches_reference_and_gradients(rng, shape, reduction, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_allclose(F.mse_loss(x, y, reduction), ref_ops.mse_loss(x, y, reduction),
                               **TOL[dtype])
    if dtype == np.float64:
        up = _upstream(rng, reduction, shape)
        g = F.mse_loss_backward(x, y, reduction, grad=up)
        directional_check(lambda a: np.asarray(F.mse_loss(a, y, reduction)), (x,), (g,),
                          np.asarray(up), rng)


# --- binary cross entropy with logits --------------------------------------------

def _bce_case(rng, dtype, weighted, pos):
    x = (3 * rng.standard_normal((5, 4))).astype(dtype)
    t = rng.uniform(0, 1, (5, 4)).round(1).astype(dtype)   # soft and hard labels
    w = rng.uniform(0.5, 2, (5, 1)).astype(dtype) if weighted else None
    pw = rng.uniform(0.5, 3, 4).astype(dtype) if pos else None
    return x, t, w, pw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted,pos", [(False, False), (True, False), (False, True), (True, True)])
def test_bce_matches_reference(rng, weighted, pos, reduction, dtype):
    x, t, w, pw = _bce_case(rng, dtype, weighted, pos)
    loss = F.binary_cross_entropy_with_logits(x, t, w, pw, reduction)
    np.testing.assert_allclose(loss, ref_ops.bce_with_logits(x, t, w, pw, reduction), **TOL[dtype])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted,pos", [(False, False), (True, True)])
def test_bce_gradients(rng, weighted, pos, reduction):
    x, t, w, pw = _bce_case(rng, np.float64, weighted, pos)
    up = _upstream(rng, reduction, x.shape)
    g = F.binary_cross_entropy_with_logits_backward(x, t, w, pw, reduction, grad=up)
    directional_check(
        lambda a: np.asarray(F.binary_cross_entropy_with_logits(a, t, w, pw, reduction)),
        (x,), (g,), np.asarray(up), rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_extreme_logits(dtype):
    x = np.array([-1e4, -100, -40, 0, 40, 100, 1e4], dtype=dtype)
    t = np.array([1, 1, 0, 1, 0, 1, 0], dtype=dtype)
    with np.errstate(over="raise", invalid="raise"):
        loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        g = F.binary_cross_entropy_with_logits_backward(x, t, reduction="none", grad=np.ones_like(x))
    expected = [1e4, 100, math.log1p(math.exp(-40)), math.log(2), 40, math.log1p(math.exp(-100)), 1e4]
    # The tails (4e-18, 4e-44) are kept, not cancelled to 0.
    np.testing.assert_allclose(loss, expected, rtol=1e-6, atol=np.finfo(dtype).tiny)
    np.testing.assert_allclose(g, [-1, -1, 0, -0.5, 1, 0, 1], atol=1e-7)


# --- common ------------------------------------------------------------------

def test_inputs_unchanged(rng):
    x, t, w = _ce_case(rng, (4, 3, 2), np.float32, True)
    xb, tb, wb, pw = _bce_case(rng, np.float32, True, True)
    arrays = (x, t, w, xb, tb, wb, pw)
    keep = [a.copy() for a in arrays]
    F.cross_entropy(x, t, w, 0.2)
    F.cross_entropy_backward(x, t, w, 0.2, "none", grad=np.ones(t.shape, np.float32))
    F.binary_cross_entropy_with_logits(xb, tb, wb, pw)
    F.binary_cross_entropy_with_logits_backward(xb, tb, wb, pw)
    F.mse_loss(xb, tb)
    F.mse_loss_backward(xb, tb)
    for a, k in zip(arrays, keep):
        np.testing.assert_array_equal(a, k)


X = np.zeros((3, 4), np.float32)
T = np.array([0, 1, 3])


BAD = [
    (lambda: F.cross_entropy(X, T.astype(np.float32)), TypeError,
     "cross_entropy: target must hold integer class indices, got dtype float32"),
    (lambda: F.cross_entropy(X, np.zeros((3, 4))), TypeError, "target has dtype float64"),
    (lambda: F.cross_entropy(X, T.astype(bool)), TypeError, "integer class indices"),
    (lambda: F.cross_entropy(X, [0, 1, 3]), TypeError, "target must be a numpy.ndarray"),
    (lambda: F.cross_entropy(X, np.array([0, 4, 1])), ValueError,
     "target values must be class indices in [0, 4) for logits of shape (3, 4), found values in [0, 4]"),
    (lambda: F.cross_entropy(X, np.array([0, -1, 1])), ValueError, "found values in [-1, 1]"),
    (lambda: F.cross_entropy(X, T[:2]), ValueError, "target has shape (2,) but logits of shape (3, 4) need target shape (3,)"),
    (lambda: F.cross_entropy(X[0], T[:1]), ValueError, "logits must be (N, C)"),
    (lambda: F.cross_entropy(X, T, np.ones(3, np.float32)), ValueError, "weight must have shape (4,)"),
    (lambda: F.cross_entropy(X, T, np.ones(4)), TypeError, "weight has dtype float64"),
    (lambda: F.cross_entropy(X, T, label_smoothing=1.5), ValueError, "label_smoothing must be a number in [0, 1]"),
    (lambda: F.cross_entropy(X, T, reduction="avg"), ValueError, "reduction must be one of"),
    (lambda: F.cross_entropy_backward(X, T, reduction="none", grad=1.0), TypeError,
     "grad must be a numpy.ndarray"),
    (lambda: F.cross_entropy_backward(X, T, reduction="none", grad=np.ones(2, np.float32)), ValueError,
     "grad must have the loss shape (3,)"),
    (lambda: F.cross_entropy_backward(X, T, grad=np.ones(3)), TypeError, "grad must be a number"),
    (lambda: F.mse_loss(X, X[:2]), ValueError, "mse_loss: target has shape (2, 4) but input has shape (3, 4)"),
    (lambda: F.mse_loss(X, X.astype(np.float64)), TypeError, "target has dtype float64"),
    (lambda: F.binary_cross_entropy_with_logits(X, X, pos_weight=np.ones(3, np.float32)), ValueError,
     "pos_weight of shape (3,) does not broadcast to the logits shape (3, 4)"),
    (lambda: F.binary_cross_entropy_with_logits(X, X, weight=np.ones((2, 3, 4), np.float32)), ValueError,
     "weight of shape (2, 3, 4) does not broadcast"),
    (lambda: F.binary_cross_entropy_with_logits(X, X, reduction=None), ValueError, "reduction must be one of"),
]

test_bad_arguments = bad_argument_test(BAD)


# --- PyTorch peer ------------------------------------------------------------

def _torch_loss_and_grad(torch, loss_fn, x, up, reduction):
    xt = torch.tensor(x, requires_grad=True)
    lt = loss_fn(xt)
    lt.backward(torch.tensor(up, dtype=xt.dtype) if reduction == "none"
                else torch.tensor(up, dtype=xt.dtype))
    return lt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_peer_torch(rng, reduction, dtype):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)
    for shape in [(6, 5), (2, 4, 3, 2)]:
        x, t, w = _ce_case(rng, shape, dtype, True)
        up = _upstream(rng, reduction, t.shape, dtype)
        for weight in (None, w):
            ref, gref = _torch_loss_and_grad(torch, lambda xt: tf.cross_entropy(
                xt, torch.tensor(t), weight=None if weight is None else torch.tensor(weight),
                label_smoothing=0.2, reduction=reduction), x, up, reduction)
            np.testing.assert_allclose(F.cross_entropy(x, t, weight, 0.2, reduction), ref, **tol)
            np.testing.assert_allclose(
                F.cross_entropy_backward(x, t, weight, 0.2, reduction, grad=up), gref, **tol)
        q = rng.dirichlet(np.ones(shape[1]), size=t.shape)
        q = np.ascontiguousarray(np.moveaxis(q, -1, 1)).astype(dtype)
        ref, gref = _torch_loss_and_grad(torch, lambda xt: tf.cross_entropy(
            xt, torch.tensor(q), weight=torch.tensor(w), label_smoothing=0.1,
            reduction=reduction), x, up, reduction)
        np.testing.assert_allclose(F.cross_entropy(x, q, w, 0.1, reduction), ref, **tol)
        np.testing.assert_allclose(
            F.cross_entropy_backward(x, q, w, 0.1, reduction, grad=up), gref, **tol)
    x, t, w, pw = _bce_case(rng, dtype, True, True)
    up = _upstream(rng, reduction, x.shape, dtype)
    ref, gref = _torch_loss_and_grad(torch, lambda xt: tf.binary_cross_entropy_with_logits(
        xt, torch.tensor(t), weight=torch.tensor(w), pos_weight=torch.tensor(pw),
        reduction=reduction), x, up, reduction)
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits(x, t, w, pw, reduction), ref, **tol)
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits_backward(
        x, t, w, pw, reduction, grad=up), gref, **tol)
    ref, gref = _torch_loss_and_grad(torch, lambda xt: tf.mse_loss(
        xt, torch.tensor(t), reduction=reduction), x, up, reduction)
    np.testing.assert_allclose(F.mse_loss(x, t, reduction), ref, **tol)
    np.testing.assert_allclose(F.mse_loss_backward(x, t, reduction, grad=up), gref, **tol)
