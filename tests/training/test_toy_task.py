"""End to end through the layer API: a small CNN learns a toy task with the
training step the docs describe (forward, loss, backward, step, zero_grad)."""
import numpy as np
import pytest

from convcore import nn, optim
from nn_helpers import require_ops
from nn_helpers import one_kernel_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def test_small_cnn_learns_toy_task(rng):
    require_ops("batch_norm", "relu", "max_pool2d", "adaptive_avg_pool2d", "linear",
                "cross_entropy")
    # class 1 images hold a bright vertical bar, class 0 a horizontal one
    n = 64
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    pos = rng.integers(1, 7, n)
    for i in range(n):
        if y[i]:
            x[i, 0, :, pos[i]] += 1.5
        else:
            x[i, 0, pos[i], :] += 1.5
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, rng=0), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, rng=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 2, rng=2))
    model[0].first_layer = True
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=0.02)
    sched = optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.5)
    losses = []
    for step in range(60):
        idx = rng.choice(n, 16, replace=False)
        losses.append(loss_fn(model(x[idx]), y[idx]))
        assert model.backward(loss_fn.backward()) is None  # first layer: no input grad
        opt.step()
        opt.zero_grad()
        sched.step()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    model.eval()
    accuracy = np.mean(model(x).argmax(axis=1) == y)
    assert accuracy > 0.9
