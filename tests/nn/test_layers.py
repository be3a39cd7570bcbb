"""Every layer: backward vs finite differences through the layer (float64),
float32 vs float64 agreement, caching under no_grad, default init, and
forward/backward equal to torch.nn with the same state dict (when torch is
installed; that also proves the state-dict key names are torch's), bad
arguments refused with a message."""
import functools
import math

import numpy as np
import pytest

import convcore
from convcore import nn
from nn_helpers import check_module_gradients
from nn_helpers import one_kernel_thread  # noqa: F401 (a fixture)
from bad_arguments import bad_argument_test

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

# id -> (convcore factory(dtype), torch factory(tnn), input shape, mode)
LAYERS = {
    "conv": (lambda dt: nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype=dt, rng=1),
             lambda t: t.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 6), "train"),
    "conv_grouped_dilated": (
        lambda dt: nn.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=2, groups=2, bias=False,
                             dtype=dt, rng=2),
        lambda t: t.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=2, groups=2, bias=False),
        (2, 4, 5, 6), "train"),
    "linear": (lambda dt: nn.Linear(5, 3, dtype=dt, rng=3), lambda t: t.Linear(5, 3),
               (4, 5), "train"),
    "linear_3d": (lambda dt: nn.Linear(5, 2, bias=False, dtype=dt, rng=4),
                  lambda t: t.Linear(5, 2, bias=False), (2, 3, 5), "train"),
    "maxpool": (lambda dt: nn.MaxPool2d(2, dtype=dt), lambda t: t.MaxPool2d(2),
                (2, 3, 6, 5), "train"),
    "maxpool_ceil": (lambda dt: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True, dtype=dt),
                     lambda t: t.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
                     (1, 2, 6, 7), "train"),
    "avgpool": (lambda dt: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, dtype=dt),
                lambda t: t.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                (2, 3, 7, 6), "train"),
    "adaptive_avgpool": (lambda dt: nn.AdaptiveAvgPool2d((2, 3), dtype=dt),
                         lambda t: t.AdaptiveAvgPool2d((2, 3)), (2, 3, 7, 5),
                         "train"),
    "global_avgpool": (lambda dt: nn.AdaptiveAvgPool2d(1, dtype=dt),
                       lambda t: t.AdaptiveAvgPool2d(1), (2, 3, 4, 5),
                       "train"),
    "batchnorm1d": (lambda dt: nn.BatchNorm1d(3, dtype=dt), lambda t: t.BatchNorm1d(3),
                    (5, 3), "train"),
    "batchnorm1d_3d": (lambda dt: nn.BatchNorm1d(3, momentum=None, dtype=dt),
                       lambda t: t.BatchNorm1d(3, momentum=None), (4, 3, 6),
                       "train"),
    "batchnorm2d": (lambda dt: nn.BatchNorm2d(3, dtype=dt), lambda t: t.BatchNorm2d(3),
                    (2, 3, 4, 5), "train"),
    "batchnorm2d_eval": (lambda dt: nn.BatchNorm2d(3, dtype=dt), lambda t: t.BatchNorm2d(3),
                         (2, 3, 4, 5), "eval"),
    "batchnorm2d_no_affine": (lambda dt: nn.BatchNorm2d(3, affine=False, dtype=dt),
                              lambda t: t.BatchNorm2d(3, affine=False), (2, 3, 3, 3),
                              "train"),
    "lrn": (lambda dt: nn.LocalResponseNorm(3, alpha=1e-2, beta=0.75, k=2.0, dtype=dt),
            lambda t: t.LocalResponseNorm(3, alpha=1e-2, beta=0.75, k=2.0), (2, 5, 3, 3),
            "train"),
    "groupnorm": (lambda dt: nn.GroupNorm(2, 4, dtype=dt), lambda t: t.GroupNorm(2, 4),
                  (2, 4, 3, 3), "train"),
    "layernorm": (lambda dt: nn.LayerNorm((3, 4), dtype=dt), lambda t: t.LayerNorm((3, 4)),
                  (2, 5, 3, 4), "train"),
    "relu": (lambda dt: nn.ReLU(dtype=dt), lambda t: t.ReLU(), (2, 3, 4, 4), "train"),
    "leaky_relu": (lambda dt: nn.LeakyReLU(0.1, dtype=dt), lambda t: t.LeakyReLU(0.1),
                   (2, 3, 4), "train"),
    "sigmoid": (lambda dt: nn.Sigmoid(dtype=dt), lambda t: t.Sigmoid(), (3, 4), "train"),
    "tanh": (lambda dt: nn.Tanh(dtype=dt), lambda t: t.Tanh(), (3, 4), "train"),
    "softplus": (lambda dt: nn.Softplus(beta=2.0, threshold=3.0, dtype=dt),
                 lambda t: t.Softplus(beta=2.0, threshold=3.0), (3, 5), "train"),
    "dropout_eval": (lambda dt: nn.Dropout(0.4, dtype=dt), lambda t: t.Dropout(0.4),
                     (3, 4), "eval"),
    "flatten": (lambda dt: nn.Flatten(dtype=dt), lambda t: t.Flatten(), (2, 3, 2, 2), "train"),
    "identity": (lambda dt: nn.Identity(dtype=dt), lambda t: t.Identity(), (2, 3), "train"),
}


def _make(name, dtype, rng):
    make, _, shape, mode = LAYERS[name]
    layer = make(dtype)
    layer.train(mode == "train")
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and layer.running_mean is not None:
        # non-trivial running statistics, so eval mode is really exercised
        layer.running_mean[...] = rng.standard_normal(layer.num_features)
        layer.running_var[...] = rng.uniform(0.5, 2.0, layer.num_features)
    for p in layer.parameters():  # away from the ones/zeros defaults
        p.data[...] = rng.standard_normal(p.shape)
    return layer, rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_gradients_finite_differences(name, rng):
    layer, x = _make(name, np.float64, rng)
    x_before = x.copy()
    y, gx = check_module_gradients(layer, x, rng, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(x, x_before)
    assert y.dtype == np.float64 and gx.shape == x.shape


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_float32_matches_float64(name, rng):
    layer64, x64 = _make(name, np.float64, np.random.default_rng(5))
    layer32, x32 = _make(name, np.float32, np.random.default_rng(5))
    y64, y32 = layer64(x64), layer32(x32)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    g = rng.standard_normal(y64.shape)
    np.testing.assert_allclose(layer32.backward(g.astype(np.float32)), layer64.backward(g),
                               rtol=1e-4, atol=1e-5)
    for p32, p64 in zip(layer32.parameters(), layer64.parameters()):
        np.testing.assert_allclose(p32.grad, p64.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_caches_nothing_under_no_grad(name, rng):
    layer, x = _make(name, np.float64, rng)
    with convcore.no_grad():
        y = layer(x)
    assert layer._cache is None
    assert layer.output_shape(x.shape) == y.shape  # what summary() relies on


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_torch(name, rng):
    torch = pytest.importorskip("torch")
    layer, x = _make(name, np.float64, rng)
    tlayer = LAYERS[name][1](torch.nn).double()
    tlayer.train(layer.training)
    tlayer.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tlayer(tx)
    y = layer(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for (key, p), (tkey, tp) in zip(layer.named_parameters(), tlayer.named_parameters()):
        assert key == tkey
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-9, atol=1e-11)
    for key, value in tlayer.state_dict().items():  # running statistics too
        np.testing.assert_allclose(layer.state_dict()[key], value.numpy(), rtol=1e-10)


def test_dropout_training_uses_mask_in_backward(rng):
    layer = nn.Dropout(0.25, dtype=np.float64, rng=7)
    x = rng.standard_normal((50, 40))
    y = layer(x)
    kept = y != 0
    assert 0.6 < kept.mean() < 0.9
    np.testing.assert_allclose(y[kept], x[kept] / 0.75)
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(layer.backward(g), np.where(kept, g / 0.75, 0.0))
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(g), g)


def test_batchnorm_running_statistics_follow_torch_rule(rng):
    bn = nn.BatchNorm2d(3, momentum=0.2, dtype=np.float64)
    x = rng.standard_normal((4, 3, 2, 5)) * 2 + 1
    bn(x)
    m = x.mean(axis=(0, 2, 3))
    v = x.var(axis=(0, 2, 3), ddof=1)  # torch keeps the unbiased variance
    np.testing.assert_allclose(bn.running_mean, 0.2 * m)
    np.testing.assert_allclose(bn.running_var, 0.8 + 0.2 * v)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    bn(x)
    assert int(bn.num_batches_tracked) == 1


@pytest.mark.parametrize("make, fan_in", [
    (lambda: nn.Conv2d(16, 32, 3, rng=0), 16 * 9),
    (lambda: nn.Conv2d(8, 64, 5, groups=4, rng=0), 2 * 25),
    (lambda: nn.Linear(300, 200, rng=0), 300),
])
def test_default_init_is_torch_kaiming_uniform_a_sqrt5(make, fan_in):
    layer = make()
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)): gain*sqrt(3/fan_in)
    w = layer.weight.data.astype(np.float64)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.97 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound / math.sqrt(3)
    b = layer.bias.data
    assert np.abs(b).max() <= bound and b.std() > 0.3 * bound


def test_default_init_is_seeded():
    a, b = nn.Conv2d(3, 4, 3, rng=11), nn.Conv2d(3, 4, 3, rng=11)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    c = nn.Conv2d(3, 4, 3, dtype=np.float64, rng=11)
    np.testing.assert_allclose(a.weight.data, c.weight.data, rtol=1e-7)
    convcore.init.manual_seed(3)
    d = nn.Linear(4, 4)
    convcore.init.manual_seed(3)
    np.testing.assert_array_equal(d.weight.data, nn.Linear(4, 4).weight.data)


def test_normalisation_defaults():
    bn = nn.BatchNorm2d(4)
    assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)
    assert np.all(bn.running_mean == 0) and np.all(bn.running_var == 1)
    ln = nn.LayerNorm([2, 3], dtype=np.float64)
    assert ln.weight.shape == (2, 3) and ln.weight.dtype == np.float64


def _build_and_call(make, x_shape):
    """Build a layer and, given an input shape, call it on zeros."""
    layer = make()
    layer(np.zeros(x_shape, np.float32))


# (layer factory, input shape or None: the constructor itself refuses, exc, fragment)
BAD_LAYERS = [
    (lambda: nn.Conv2d(3, 4, 3), (1, 2, 5, 5), ValueError, "conv2d"),
    (lambda: nn.Conv2d(3, 4, 2, groups=2), None, ValueError, "groups=2 must divide"),
    (lambda: nn.Dropout(1.5), None, ValueError, "p must be in [0, 1]"),
    (lambda: nn.GroupNorm(3, 4), None, ValueError, "num_groups=3 must divide"),
    (lambda: nn.BatchNorm2d(3), (2, 3), ValueError, "BatchNorm2d: expected a 4-D input"),
]

test_bad_arguments = bad_argument_test(
    [(functools.partial(_build_and_call, make, shape), exc, fragment)
     for make, shape, exc, fragment in BAD_LAYERS])
