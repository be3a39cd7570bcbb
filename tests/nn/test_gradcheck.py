"""convcore.testing.gradcheck: passes on the library's layers, fails on a
wrong backward naming the input or parameter, the index and both values,
and leaves the caller's arrays and the module as they were."""
import re

import numpy as np
import pytest

import convcore.functional as F
from convcore import nn
from convcore.testing import GradcheckError, gradcheck


def layers():
    return {
        "conv": (lambda: nn.Conv2d(2, 3, 3, padding=1, stride=2, rng=0), (2, 2, 5, 4)),
        "bn-train": (lambda: nn.BatchNorm2d(3).train(), (3, 3, 2, 3)),
        "linear": (lambda: nn.Linear(5, 4, rng=0), (3, 5)),
        "sequential": (lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, rng=0), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(),
            nn.Linear(12, 2, rng=1)), (2, 2, 4, 4)),
        "1x1 batch 1": (lambda: nn.Conv2d(1, 1, 1, rng=0), (1, 1, 1, 1)),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(layers()))
def test_library_layers_pass_and_stay_untouched(rng, name, dtype):
    make, shape = layers()[name]
    layer = make()
    x = rng.standard_normal(shape).astype(dtype)
    x_before = x.copy()
    # a gradient accumulated before the check survives it, values and object
    layer(x.astype(np.float32))
    layer.backward(np.ones_like(layer(x.astype(np.float32))))
    before = [(p, p.data, p.data.copy(), p.grad, p.grad.copy()) for p in layer.parameters()]
    buffers = [(b, b.copy()) for b in layer.buffers()]
    assert gradcheck(layer, x) is True
    np.testing.assert_array_equal(x, x_before)
    assert x.dtype == dtype
    for p, data, values, grad, grad_values in before:
        assert p.data is data and p.data.dtype == np.float32 and p.grad is grad
        np.testing.assert_array_equal(p.data, values)
        np.testing.assert_array_equal(p.grad, grad_values)
    for b, values in buffers:   # batch norm's running statistics and counter
        np.testing.assert_array_equal(b, values)


class ScaledLinear(nn.Module):
    """y = scale * x @ W^T; `bug` names the gradient backward gets wrong."""

    def __init__(self, bug=None):
        super().__init__()
        self.weight = nn.Parameter(np.arange(6.0).reshape(2, 3) / 7)
        self.scale = nn.Parameter(np.array([1.5]))
        self.bug = bug

    def forward(self, x):
        self.save_for_backward(x)
        return self.scale.data * (x @ self.weight.data.T)

    def backward(self, g):
        (x,) = self.saved_tensors
        w, s = self.weight.data, self.scale.data
        gw = s * g.T @ x
        if self.bug == "weight":
            gw[1, 2] += 0.5
        self.weight.accumulate_grad(gw)
        if self.bug != "scale":   # forgets this parameter
            self.scale.accumulate_grad(np.array([np.sum(g * (x @ w.T))]))
        gx = s * g @ w
        if self.bug == "input":
            gx = gx * 1.01
        return gx


def test_correct_custom_layer_passes(rng):
    assert gradcheck(ScaledLinear(), rng.standard_normal((4, 3)))


def test_wrong_parameter_gradient_is_named_with_index_and_values(rng):
    with pytest.raises(GradcheckError) as err:
        gradcheck(ScaledLinear("weight"), rng.standard_normal((4, 3)))
    msg = str(err.value)
    assert re.search(r"parameter 'weight' at \(1, 2\): analytic .* vs numeric ", msg), msg
    analytic, numeric = map(float, re.findall(r"(?:analytic|numeric) (-?[\d.e+-]+)", msg))
    assert analytic - numeric == pytest.approx(0.5, abs=1e-6)
    assert isinstance(err.value, AssertionError)


def test_missing_parameter_gradient_and_wrong_input_gradient(rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(GradcheckError, match="parameter 'scale': backward gave no gradient"):
        gradcheck(ScaledLinear("scale"), x)
    with pytest.raises(GradcheckError, match=r"input 0 at \(0, 0\)"):
        gradcheck(ScaledLinear("input"), x)
    # parameters alone are right: check_params=False does not look at them
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(ScaledLinear("input"), x, check_params=False)
    assert gradcheck(ScaledLinear("weight"), x, check_params=False)


def test_large_arrays_are_checked_along_random_directions(rng):
    class OneWrongElement(nn.Module):
        def forward(self, x):
            return x ** 2

        def backward(self, g):
            gx = 2 * g * self.x_for_test
            gx[17, 3] += 1.0
            return gx

    layer = OneWrongElement()
    x = rng.standard_normal((30, 40))
    layer.x_for_test = x
    with pytest.raises(GradcheckError, match="input 0 at random direction"):
        gradcheck(layer, x)
    # element by element up to full_size (the wrong element then named)
    small = x[:18, :4].copy()
    layer.x_for_test = small
    with pytest.raises(GradcheckError, match=r"input 0 at \(17, 3\)"):
        gradcheck(layer, small)


def test_function_pairs(rng):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    fwd = lambda x, w: F.conv2d(x, w, padding=1)            # noqa: E731
    bwd = lambda g, x, w: F.conv2d_backward(g, x, w, padding=1, bias=False)[:2]  # noqa: E731
    assert gradcheck((fwd, bwd), (x, w))
    wrong = lambda g, x, w: (bwd(g, x, w)[0], 0.9 * bwd(g, x, w)[1])  # noqa: E731
    with pytest.raises(GradcheckError, match=r"input 1 at \(0, 0, 0, 0\)"):
        gradcheck((fwd, wrong), (x, w))
    skip_w = lambda g, x, w: (bwd(g, x, w)[0], None)  # noqa: E731
    assert gradcheck((fwd, skip_w), (x, w))
    assert gradcheck((np.tanh, lambda g, x: g * (1 - np.tanh(x) ** 2)), rng.standard_normal(5))


def test_float32_forward_is_refused_with_the_reason(rng):
    with pytest.raises(TypeError, match="returned float32 for float64 inputs; finite "
                                        "differences need float64"):
        gradcheck((lambda x: x.astype(np.float32), lambda g, x: g), rng.standard_normal(3))


def test_bad_first_argument():
    with pytest.raises(TypeError, match="must be a convcore Module or a pair"):
        gradcheck(np.tanh, np.zeros(3))


def test_first_layer_checks_parameters_only(rng):
    conv = nn.Conv2d(1, 2, 3, rng=0)
    conv.first_layer = True
    assert gradcheck(conv, rng.standard_normal((1, 1, 4, 4)))


def test_writing_into_given_arrays_is_caught(rng):
    class InPlace(nn.Module):
        def __init__(self, where):
            super().__init__()
            self.where = where

        def forward(self, x):
            if self.where == "forward":
                x *= 1.0 + 1e-3   # writes into the caller's input
            return x.copy()

        def backward(self, g):
            if self.where == "backward":
                g[...] = 2 * g
                return g
            return g.copy()

    x = rng.standard_normal(4)
    with pytest.raises(GradcheckError, match=r"InPlace.forward modified input 0 it was given"):
        gradcheck(InPlace("forward"), x)
    with pytest.raises(GradcheckError, match="InPlace.backward modified the output gradient"):
        gradcheck(InPlace("backward"), x)

    def product_backward_scaling_b(g, a, b):
        b *= 2   # into an input
        return g * b / 2, g * a

    with pytest.raises(GradcheckError, match=r"backward modified input 1 it was given"):
        gradcheck((lambda a, b: a * b, product_backward_scaling_b), (x, x + 1))
    assert gradcheck(InPlace(None), x)
