"""model.summary(): the seeds' arithmetic for LeNet-5, AlexNet and VGG-16,
built inline from convcore layers (weights are not drawn: skip_init)."""
import numpy as np
import pytest

import convcore
from convcore import nn


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(),
        nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))


def alexnet():
    """Krizhevsky et al. 2012, with the two-GPU split as groups=2."""
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)  # noqa: E731
    features = nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), lrn(), nn.MaxPool2d(3, stride=2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), lrn(), nn.MaxPool2d(3, stride=2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, stride=2))
    classifier = nn.Sequential(
        nn.Flatten(), nn.Dropout(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
        nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))
    return nn.Sequential(features, classifier)


def vgg16():
    layers, c = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return nn.Sequential(*layers, nn.Flatten(),
                         nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
                         nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 1000))


def test_lenet5_numbers():
    with convcore.init.skip_init():
        s = lenet5().summary((1, 32, 32))
    assert s.total_params == 61706  # ~60K
    shapes = [r.output_shape for r in s.rows if r.kind == "Conv2d"]
    assert shapes == [(6, 28, 28), (16, 10, 10), (120, 1, 1)]
    # C1: 28*28*6 outputs x 25 taps; C3: 10*10*16 x 150; C5: 120 x 400; F6, output
    assert s.total_macs == 117600 + 240000 + 48000 + 10080 + 840
    assert s.rows[-1].output_shape == (10,)


def test_alexnet_numbers():
    with convcore.init.skip_init():
        s = alexnet().summary((3, 227, 227))
    conv1 = s.rows[0]
    assert conv1.name == "0.0" and conv1.output_shape == (96, 55, 55)
    assert conv1.params == 11 * 11 * 3 * 96 + 96  # ~35K weights
    assert conv1.macs == 55 * 55 * 96 * 363  # 105M multiply-adds
    assert [r.output_shape for r in s.rows if r.kind == "MaxPool2d"] == [
        (96, 27, 27), (256, 13, 13), (256, 6, 6)]
    assert s.total_params == 60965224  # ~60M
    assert 0.7e9 < s.total_macs < 0.75e9
    text = str(s)
    assert "96x55x55" in text and "Total params: 60,965,224" in text


def test_vgg16_numbers():
    with convcore.init.skip_init():
        model = vgg16()
    s = model.summary((3, 224, 224))
    assert s.total_params == 138357544  # ~138M
    assert s.trainable_params == s.total_params
    assert abs(s.total_macs - 15.47e9) < 0.01e9  # ~15.5 G multiply-adds
    assert s.rows[0].output_shape == (64, 224, 224)
    assert [r for r in s.rows if r.kind == "Flatten"][0].output_shape == (25088,)


def test_summary_counts_frozen_and_runs_unknown_leaves():
    class Double(nn.Module):  # a leaf without output_shape: summary runs it
        def forward(self, x):
            return np.concatenate([x, x], axis=1)

    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), Double(), nn.Conv2d(4, 1, 1, rng=0))
    net[0].requires_grad_(False)
    s = net.summary((1, 5, 5))
    assert [r.output_shape for r in s.rows] == [(2, 3, 3), (4, 3, 3), (1, 3, 3)]
    assert s.total_params == 20 + 5 and s.trainable_params == 5
    assert all(m._cache is None for m in net.modules())


def test_summary_rejects_batch_or_bad_shape():
    with pytest.raises(ValueError, match="without the batch dimension"):
        nn.Conv2d(1, 1, 1).summary((0, 4, 4))
