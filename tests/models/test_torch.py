"""Peer checks against PyTorch (skipped when torch is not installed): the
zoo's networks compute torch's function with the same weights, and one
fit() step updates them as torch's SGD does."""
import numpy as np
import pytest

import convcore
from convcore import models, nn, optim
from convcore.training import fit

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def one_thread():
    previous = convcore.set_num_threads(1)
    yield
    convcore.set_num_threads(previous)


def _load_into_torch(tmodel, state):
    tstate = tmodel.state_dict()
    assert len(tstate) == len(state)
    with torch.no_grad():
        for (tk, tv), (k, v) in zip(tstate.items(), state.items()):
            assert tuple(tv.shape) == v.shape, (tk, k)
            tv.copy_(torch.from_numpy(np.array(v)))


def _torch_lenet_digits():
    T = torch.nn
    return T.Sequential(T.Conv2d(1, 32, 3, padding=1), T.ReLU(), T.Conv2d(32, 64, 3, padding=1),
                        T.ReLU(), T.MaxPool2d(2), T.Conv2d(64, 120, 4), T.ReLU(), T.Flatten(),
                        T.Linear(120, 84), T.ReLU(), T.Linear(84, 10)).double()


def test_fit_step_matches_torch_sgd(rng):
    model = models.lenet_digits(rng=0, dtype=np.float64)
    tmodel = _torch_lenet_digits()
    _load_into_torch(tmodel, model.state_dict())
    x = rng.standard_normal((16, 1, 8, 8))
    y = rng.integers(0, 10, 16)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    fit(model, nn.CrossEntropyLoss(), opt, (x, y), epochs=2, batch_size=8, progress=False)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(2):
        for i in (0, 8):
            topt.zero_grad()
            loss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x[i:i + 8])),
                                                     torch.from_numpy(y[i:i + 8]))
            loss.backward()
            topt.step()
    for (k, v), tv in zip(model.state_dict().items(), tmodel.state_dict().values()):
        np.testing.assert_allclose(v, tv.numpy(), rtol=1e-9, atol=1e-11, err_msg=k)


class _TorchBasicBlock(torch.nn.Module):
    """torchvision's BasicBlock (conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        T = torch.nn
        self.conv1 = T.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = T.BatchNorm2d(planes)
        self.conv2 = T.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = T.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = T.Sequential(T.Conv2d(cin, planes, 1, stride, bias=False),
                                           T.BatchNorm2d(planes))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + short)


@pytest.mark.parametrize("cin,planes,stride", [(4, 4, 1), (4, 8, 2)])
def test_basic_block_matches_torchvision_block_in_training_mode(rng, cin, planes, stride):
    block = models.basic_block(cin, planes, stride, rng=1, dtype=np.float64)
    tblock = _TorchBasicBlock(cin, planes, stride).double()
    state = block.state_dict()
    tstate = tblock.state_dict()  # tensors sharing the parameters' storage
    # torchvision's names, renamed by the public helper, give ours
    mapping = models.torchvision_keys({f"layer1.0.{k}": k for k in tstate})
    pre = len("layer1.0.")
    assert {k[pre:] for k in mapping} == set(state)
    with torch.no_grad():
        for ours, tk in mapping.items():
            tstate[tk].copy_(torch.from_numpy(np.array(state[ours[pre:]])))
    x = rng.standard_normal((3, cin, 6, 6))
    g = rng.standard_normal((3, planes, 6 // stride, 6 // stride))
    y = block(x)
    gx = block.backward(g)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = tblock(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(block.body.conv1.weight.grad, tblock.conv1.weight.grad.numpy(),
                               rtol=1e-9, atol=1e-11)
    # running statistics moved the same way
    np.testing.assert_allclose(block.body.bn2.running_var, tblock.bn2.running_var.numpy(),
                               rtol=1e-12)


def test_googlenet_inception_matches_torch_branches(rng):
    block = models.inception(8, 4, 3, 5, 2, 3, 2, rng=2, dtype=np.float64)
    T = torch.nn
    branches = [
        T.Sequential(T.Conv2d(8, 4, 1), T.ReLU()),
        T.Sequential(T.Conv2d(8, 3, 1), T.ReLU(), T.Conv2d(3, 5, 3, padding=1), T.ReLU()),
        T.Sequential(T.Conv2d(8, 2, 1), T.ReLU(), T.Conv2d(2, 3, 5, padding=2), T.ReLU()),
        T.Sequential(T.MaxPool2d(3, 1, 1, ceil_mode=True), T.Conv2d(8, 2, 1), T.ReLU()),
    ]
    tblock = T.ModuleList(branches).double()
    _load_into_torch(tblock, block.state_dict())
    x = rng.standard_normal((2, 8, 5, 7))
    y = block(x)
    ty = torch.cat([b(torch.from_numpy(x)) for b in tblock], dim=1)
    assert y.shape == (2, 4 + 5 + 3 + 2, 5, 7)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
