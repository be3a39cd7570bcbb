"""convcore.init: PyTorch's gain and fan rules, seeded draws, in place."""
import math

import numpy as np
import pytest

from convcore import init, nn


def test_fans_follow_torch():
    w = np.zeros((8, 3, 5, 7))
    assert init.calculate_fan_in_and_fan_out(w) == (3 * 35, 8 * 35)
    assert init.calculate_fan_in_and_fan_out(np.zeros((4, 6))) == (6, 4)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.calculate_fan_in_and_fan_out(np.zeros(3))


@pytest.mark.parametrize("name, param, gain", [
    ("linear", None, 1.0), ("conv2d", None, 1.0), ("sigmoid", None, 1.0),
    ("tanh", None, 5 / 3), ("relu", None, math.sqrt(2)),
    ("leaky_relu", None, math.sqrt(2 / (1 + 0.01 ** 2))),
    ("leaky_relu", math.sqrt(5), math.sqrt(1 / 3)), ("selu", None, 0.75),
])
def test_calculate_gain(name, param, gain):
    assert init.calculate_gain(name, param) == pytest.approx(gain)


def test_calculate_gain_matches_torch():
    torch = pytest.importorskip("torch")
    for name in ("linear", "tanh", "relu", "leaky_relu", "selu"):
        assert init.calculate_gain(name, 0.2) == pytest.approx(
            torch.nn.init.calculate_gain(name, 0.2))


def _big(shape=(256, 128, 3, 3)):
    return np.zeros(shape, dtype=np.float64)


@pytest.mark.parametrize("fn, kwargs, dist, expected_std", [
    # xavier: variance 2 / (fan_in + fan_out) (Glorot), times gain^2
    (init.xavier_uniform_, {}, "uniform", math.sqrt(2 / (1152 + 2304))),
    (init.xavier_normal_, {"gain": 2.0}, "normal", 2 * math.sqrt(2 / (1152 + 2304))),
    # kaiming: variance gain^2 / fan (He)
    (init.kaiming_normal_, {"nonlinearity": "relu"}, "normal", math.sqrt(2 / 1152)),
    (init.kaiming_uniform_, {"mode": "fan_out", "nonlinearity": "relu"}, "uniform",
     math.sqrt(2 / 2304)),
    (init.kaiming_uniform_, {"a": math.sqrt(5)}, "uniform", 1 / math.sqrt(3 * 1152)),
])
def test_initialiser_statistics(fn, kwargs, dist, expected_std):
    w = _big()
    assert fn(w, rng=0, **kwargs) is w
    assert abs(w.std() - expected_std) < 0.01 * expected_std
    assert abs(w.mean()) < 0.01 * expected_std
    if dist == "uniform":
        bound = math.sqrt(3) * expected_std
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.999 * bound


def test_initialisers_are_seeded_and_work_on_parameters():
    a, b = _big((4, 3)), _big((4, 3))
    init.xavier_normal_(a, rng=np.random.default_rng(1))
    init.xavier_normal_(b, rng=1)
    np.testing.assert_array_equal(a, b)
    p = nn.Parameter(np.zeros((4, 3), np.float32))
    assert init.kaiming_normal_(p, rng=1) is p
    assert p.data.dtype == np.float32 and p.data.std() > 0
    init.constant_(p, 0.5)
    assert np.all(p.data == 0.5)
    init.zeros_(p)
    assert np.all(p.data == 0)
    init.ones_(p.data)
    assert np.all(p.data == 1)


def test_chunked_draws_equal_one_draw(monkeypatch):
    monkeypatch.setattr(init, "_CHUNK", 7)
    w = _big((5, 6))
    init.uniform_(w, -2, 3, rng=4)
    np.testing.assert_array_equal(
        w, np.random.default_rng(4).uniform(-2, 3, size=30).reshape(5, 6))


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out'"):
        init.kaiming_normal_(_big((2, 2)), mode="fan")
    with pytest.raises(ValueError, match="unsupported nonlinearity 'gelu'"):
        init.calculate_gain("gelu")
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        init.normal_(_big((2, 2)), rng="seed")
    with pytest.raises(TypeError, match="expected a float ndarray or Parameter"):
        init.zeros_([1, 2])


def test_skip_init_leaves_zeros():
    with init.skip_init():
        layer = nn.Linear(3, 2, rng=0)
    assert np.all(layer.weight.data == 0) and np.all(layer.bias.data == 0)
    assert np.any(nn.Linear(3, 2, rng=0).weight.data != 0)
