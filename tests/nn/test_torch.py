"""Peer check of a whole network against PyTorch: the same state dict
gives the same outputs, loss and gradients, and 10 SGD steps give the
same losses. Skipped without torch."""
import numpy as np
import pytest

from convcore import nn, optim
from nn_helpers import one_kernel_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


torch = pytest.importorskip("torch")
tnn = torch.nn


class TorchResidual(tnn.Module):
    """torch twin of nn.Residual: same key names (body., shortcut.)."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class TorchConcat(tnn.Sequential):
    """torch twin of nn.Concat: keys "0.", "1.", ..."""

    def forward(self, x):
        return torch.cat([m(x) for m in self], dim=1)


def build(lib):
    """The same architecture from either library's layers."""
    if lib == "torch":
        L, Res, Cat = tnn, TorchResidual, TorchConcat
    else:
        L, Res, Cat = nn, nn.Residual, nn.Concat
    kw = {} if lib == "torch" else {"dtype": np.float64}
    return L.Sequential(
        L.Conv2d(3, 4, 3, padding=1, bias=False, **kw), L.BatchNorm2d(4, **kw), L.ReLU(),
        Res(L.Sequential(L.Conv2d(4, 4, 3, padding=1, **kw), L.ReLU())),
        Res(L.Sequential(L.Conv2d(4, 6, 3, stride=2, padding=1, **kw), L.BatchNorm2d(6, **kw)),
            L.Conv2d(4, 6, 1, stride=2, **kw)),
        Cat(L.Conv2d(6, 2, 1, **kw), L.Sequential(L.Conv2d(6, 3, 3, padding=1, **kw),
                                                  L.Tanh())),
        L.MaxPool2d(2), L.AdaptiveAvgPool2d(1), L.Flatten(), L.Linear(5, 4, **kw))


def twins():
    ours = build("convcore")
    theirs = build("torch").double()
    state = ours.state_dict()
    assert list(state) == list(theirs.state_dict())  # the key names are torch's
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return ours, theirs


def test_same_outputs_and_gradients(rng):
    ours, theirs = twins()
    x = rng.standard_normal((3, 3, 8, 8))
    target = np.array([0, 3, 1])
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    value = loss(ours(x), target)
    gx = ours.backward(loss.backward())
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tvalue = tnn.CrossEntropyLoss(label_smoothing=0.1)(theirs(tx), torch.from_numpy(target))
    tvalue.backward()
    assert value == pytest.approx(tvalue.item(), rel=1e-10)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-8, atol=1e-12)
    for (k, p), (tk, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert k == tk
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=k)
    for k, v in theirs.state_dict().items():  # running statistics
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-10, err_msg=k)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).numpy(), rtol=1e-9,
                                   atol=1e-12)


def test_ten_sgd_steps_give_the_same_losses(rng):
    ours, theirs = twins()
    opt = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    loss, tloss = nn.CrossEntropyLoss(), tnn.CrossEntropyLoss()
    losses, tlosses = [], []
    for _ in range(10):
        x = rng.standard_normal((4, 3, 8, 8))
        t = rng.integers(0, 4, 4)
        losses.append(loss(ours(x), t))
        ours.backward(loss.backward())
        opt.step()
        opt.zero_grad()
        tv = tloss(theirs(torch.from_numpy(x)), torch.from_numpy(t))
        tlosses.append(tv.item())
        tv.backward()
        topt.step()
        topt.zero_grad()
    np.testing.assert_allclose(losses, tlosses, rtol=1e-8)
    assert losses[-1] != losses[0]
