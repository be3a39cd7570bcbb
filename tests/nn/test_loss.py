"""Loss modules: value against the formula written out, gradient against
finite differences, nothing kept under no_grad, torch peers, class weights
in the logits' dtype. (The functional losses: tests/functional/test_losses.py.)"""
import numpy as np
import pytest

import convcore
from convcore import F, nn
from gradcheck import directional_check
from nn_helpers import one_kernel_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_cross_entropy_value_and_gradient(rng):
    logits = rng.standard_normal((5, 4))
    target = np.array([0, 3, 1, 1, 2])
    w = np.array([1.0, 2.0, 0.5, 1.5])
    eps = 0.1
    loss = nn.CrossEntropyLoss(weight=w, label_smoothing=eps)
    value = loss(logits, target)
    assert isinstance(value, float)
    # torch's definition: weighted NLL of the smoothed target, the NLL part
    # averaged over the sum of the target weights.
    lsm = log_softmax(logits)
    nll = -(w[target] * lsm[np.arange(5), target]).sum() / w[target].sum()
    smooth = -(lsm * w).sum(axis=1).sum() / w[target].sum() / 4
    assert value == pytest.approx((1 - eps) * nll + eps * smooth, rel=1e-12)
    grad = loss.backward()
    directional_check(lambda z: np.array(loss.forward(z, target)), [logits], [grad],
                      np.array(1.0), rng)


def test_mse_and_bce_values_and_gradients(rng):
    out, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    mse = nn.MSELoss()
    assert mse(out, target) == pytest.approx(np.mean((out - target) ** 2), rel=1e-12)
    np.testing.assert_allclose(mse.backward(), 2 * (out - target) / out.size, rtol=1e-12)
    probs = rng.uniform(size=(3, 4))
    bce = nn.BCEWithLogitsLoss(reduction="sum")
    s = 1 / (1 + np.exp(-out))
    expected = -(probs * np.log(s) + (1 - probs) * np.log(1 - s)).sum()
    assert bce(out, probs) == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(bce.backward(), s - probs, rtol=1e-10)


def test_loss_keeps_nothing_under_no_grad(rng):
    loss = nn.MSELoss()
    with convcore.no_grad():
        loss(rng.standard_normal(3), rng.standard_normal(3))
    with pytest.raises(RuntimeError, match="MSELoss.backward: nothing saved"):
        loss.backward()


def test_bad_loss_arguments():
    with pytest.raises(ValueError, match="reduction must be"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        nn.CrossEntropyLoss(label_smoothing=2.0)


@pytest.mark.parametrize("ours, theirs, kind", [
    (lambda: nn.CrossEntropyLoss(label_smoothing=0.2), lambda t: t.CrossEntropyLoss(
        label_smoothing=0.2), "class"),
    (lambda: nn.CrossEntropyLoss(weight=np.array([1.0, 3.0, 0.5]), reduction="sum"),
     lambda t: t.CrossEntropyLoss(weight=t_tensor(np.array([1.0, 3.0, 0.5])),
                                  reduction="sum"), "class"),
    (lambda: nn.MSELoss(), lambda t: t.MSELoss(), "real"),
    (lambda: nn.BCEWithLogitsLoss(pos_weight=np.array([2.0, 1.0, 0.5])),
     lambda t: t.BCEWithLogitsLoss(pos_weight=t_tensor(np.array([2.0, 1.0, 0.5]))), "prob"),
])
def test_losses_match_torch(ours, theirs, kind, rng):
    torch = pytest.importorskip("torch")
    out = rng.standard_normal((4, 3))
    target = {"class": rng.integers(0, 3, 4), "real": rng.standard_normal((4, 3)),
              "prob": rng.uniform(size=(4, 3))}[kind]
    loss = ours()
    value = loss(out, target)
    tout = torch.from_numpy(out.copy()).requires_grad_(True)
    tvalue = theirs(torch.nn)(tout, torch.from_numpy(target))
    tvalue.backward()
    assert value == pytest.approx(tvalue.item(), rel=1e-10)
    np.testing.assert_allclose(loss.backward(), tout.grad.numpy(), rtol=1e-9, atol=1e-12)


def t_tensor(a):
    import torch
    return torch.from_numpy(a)


# --- class weights follow the logits' dtype ----------------------------------

def test_cross_entropy_weight_given_as_list_works_with_float32_logits(rng):
    logits = rng.standard_normal((6, 3)).astype(np.float32)
    target = np.array([0, 1, 2, 2, 1, 0])
    weight = [1.0, 2.0, 0.5]
    loss = nn.CrossEntropyLoss(weight=weight)
    value = loss(logits, target)
    expect = F.cross_entropy(logits, target, weight=np.array(weight, np.float32))
    assert abs(value - expect) < 1e-6
    grad = loss.backward()
    assert grad.dtype == np.float32 and grad.shape == logits.shape


def test_bce_pos_weight_list(rng):
    logits = rng.standard_normal((4, 2)).astype(np.float32)
    target = (rng.random((4, 2)) > 0.5).astype(np.float32)
    loss = nn.BCEWithLogitsLoss(pos_weight=[2.0, 3.0])
    value = loss(logits, target)
    expect = F.binary_cross_entropy_with_logits(logits, target, pos_weight=np.array([2.0, 3.0], np.float32))
    assert abs(value - expect) < 1e-6
