"""The custom-layer API: Module.save_for_backward / saved_tensors (what is
kept, when it goes) and the reuse rule (one instance, one place in a
forward pass; convcore.nn._reuse)."""
import numpy as np
import pytest

import convcore
from convcore import nn
from convcore.testing import gradcheck


class Swish(nn.Module):
    """x * sigmoid(beta * x), with a learnable beta: a layer written the
    way the README says."""

    def __init__(self, beta=1.0):
        super().__init__()
        self.beta = nn.Parameter(np.array([beta]))

    def forward(self, x):
        s = 1.0 / (1.0 + np.exp(-self.beta.data * x))
        self.save_for_backward(x, s)
        return x * s

    def backward(self, grad_y):
        x, s = self.saved_tensors
        ds = s * (1 - s)
        self.beta.accumulate_grad(np.array([np.sum(grad_y * x * x * ds)]))
        return grad_y * (s + self.beta.data * x * ds)


def swish_reference(x, beta):
    """float64 forward and the two gradients for an upstream of ones,
    written out from d/dx x*sig(bx) = sig + bx sig (1-sig)."""
    sig = 1.0 / (1.0 + np.exp(-beta * x))
    return x * sig, sig + beta * x * sig * (1 - sig), np.sum(x * x * sig * (1 - sig))


@pytest.fixture(autouse=True)
def fusion_on():
    previous = nn.set_fusion(True)
    yield
    nn.set_fusion(previous)


def test_custom_layer_matches_reference_and_gradcheck(rng):
    x = rng.standard_normal((2, 3, 4))
    layer = Swish(0.7)
    y = layer(x)
    gx = layer.backward(np.ones_like(y))
    ry, rgx, rgb = swish_reference(x, 0.7)
    np.testing.assert_allclose(y, ry, rtol=1e-12)
    np.testing.assert_allclose(gx, rgx, rtol=1e-12)
    np.testing.assert_allclose(layer.beta.grad, [rgb], rtol=1e-12)
    assert gradcheck(Swish(0.7), x)


def test_saved_tensors_are_released_by_backward(rng):
    layer = Swish()
    x = rng.standard_normal((3, 2))
    layer(x)
    layer.backward(np.ones((3, 2)))
    assert layer.__dict__["_cache"] is None   # the arrays went with the step
    with pytest.raises(RuntimeError, match=r"Swish.backward: nothing saved for backward; "
                                           r"call forward first"):
        layer.backward(np.ones((3, 2)))


def test_backward_without_forward_says_so():
    with pytest.raises(RuntimeError, match="ReLU.backward: nothing saved"):
        nn.ReLU().backward(np.ones(3))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_no_grad_keeps_nothing(rng, mode):
    layer = getattr(Swish(), mode)()
    with convcore.no_grad():
        layer(rng.standard_normal(4))
    assert layer.__dict__["_cache"] is None
    with pytest.raises(RuntimeError, match="outside convcore.no_grad"):
        layer.backward(np.ones(4))


def test_a_new_forward_replaces_an_abandoned_one(rng):
    # forward, forward (an evaluation in training mode), then a step: the
    # backward belongs to the latest forward, as in any training loop.
    net = nn.Sequential(nn.Linear(3, 4, dtype=np.float64, rng=0), nn.ReLU(),
                        nn.Linear(4, 2, dtype=np.float64, rng=1))
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    net(x1)
    y = net(x2)
    gx = net.backward(np.ones_like(y))
    fresh = nn.Sequential(nn.Linear(3, 4, dtype=np.float64, rng=0), nn.ReLU(),
                          nn.Linear(4, 2, dtype=np.float64, rng=1))
    fresh(x2)
    np.testing.assert_allclose(gx, fresh.backward(np.ones_like(y)), rtol=1e-12)
    np.testing.assert_allclose(net[0].weight.grad, fresh[0].weight.grad, rtol=1e-12)


def test_old_private_names_still_work(rng):
    class Old(nn.Module):
        def forward(self, x):
            self._save_for_backward(x)
            return 2 * x

        def backward(self, g):
            (x,) = self._saved()
            return 2 * g

    assert gradcheck(Old(), rng.standard_normal(3))


def shared_relu_net(fused_pattern, shared=True):
    """A ReLU at two places: one instance (shared) or two."""
    relu = nn.ReLU(dtype=np.float64)
    relu2 = relu if shared else nn.ReLU(dtype=np.float64)
    if fused_pattern:   # Linear -> ReLU pairs: the ReLU runs inside fused steps
        layers = [nn.Linear(3, 3, dtype=np.float64, rng=0), relu,
                  nn.Linear(3, 3, dtype=np.float64, rng=1), relu2]
    else:               # the ReLU is called itself at both places
        layers = [nn.Flatten(), relu, nn.Identity(), relu2]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("fusion", [True, False])
@pytest.mark.parametrize("fused_pattern", [True, False])
def test_reuse_in_training_is_refused_at_the_second_forward(rng, fusion, fused_pattern):
    nn.set_fusion(fusion)
    net = shared_relu_net(fused_pattern)
    with pytest.raises(RuntimeError, match=r"ReLU: this instance already ran in this "
                                           r"forward pass .* two ReLU\(\) modules"):
        net(rng.standard_normal((2, 3)))
    # the failed pass leaves nothing behind: a network without reuse runs
    ok = nn.Sequential(nn.Linear(3, 3, dtype=np.float64, rng=0), nn.ReLU())
    ok.backward(np.ones_like(ok(rng.standard_normal((2, 3)))))


def test_reuse_refused_inside_residual_and_concat(rng):
    relu = nn.ReLU(dtype=np.float64)
    for net in (nn.Residual(relu, relu), nn.Concat(relu, nn.Identity(), relu)):
        with pytest.raises(RuntimeError, match="ReLU: this instance already ran"):
            net(rng.standard_normal((2, 3, 2, 2)))
    block = nn.Sequential(nn.Conv2d(2, 2, 1, dtype=np.float64, rng=0), nn.ReLU())
    with pytest.raises(RuntimeError, match="already ran in this forward pass"):
        nn.Sequential(block, block)(rng.standard_normal((1, 2, 3, 3)))


@pytest.mark.parametrize("fused_pattern", [True, False])
def test_reuse_allowed_under_no_grad_and_in_eval(rng, fused_pattern):
    net = shared_relu_net(fused_pattern)
    two = shared_relu_net(fused_pattern, shared=False)
    x = rng.standard_normal((2, 3))
    with convcore.no_grad():
        np.testing.assert_allclose(net(x), two(x), rtol=1e-12)
    net.eval()
    y = net(x)   # plain inference without no_grad
    np.testing.assert_allclose(y, two(x), rtol=1e-12)
    # ... but not backward through it: the cause is named
    with pytest.raises(RuntimeError, match=r"ReLU.backward: this instance ran twice in "
                                           r"the last forward pass"):
        net.backward(np.ones_like(y))
    # a new pass without reuse is fine again (the refusal is lifted)
    single = nn.Sequential(net[0], net[1])
    single.backward(np.ones_like(single(x)))


def test_two_instances_are_fine_and_summary_is_unaffected(rng):
    net = nn.Sequential(nn.Linear(3, 3, rng=0), nn.ReLU(), nn.Linear(3, 3, rng=1), nn.ReLU())
    assert gradcheck(net, rng.standard_normal((2, 3)))
    assert net.summary((3,)).total_params == 24


def test_refusal_and_hooks_together(rng):
    relu = nn.ReLU(dtype=np.float64).eval()
    calls = []
    relu.register_full_backward_hook(lambda m, gi, go: calls.append(gi[0].shape))
    twice = nn.Sequential(relu, nn.Identity(), relu).eval()
    x = rng.standard_normal((2, 3))
    y = twice(x)
    with pytest.raises(RuntimeError, match="ran twice in the last forward pass"):
        twice.backward(np.ones_like(y))
    assert calls == []
    once = nn.Sequential(nn.Identity(), relu)
    gx = once.backward(np.ones_like(once(x)))   # a new pass: allowed again, hook kept
    np.testing.assert_array_equal(gx, (x > 0).astype(float))
    assert calls == [(2, 3)]


def test_a_failed_forward_does_not_poison_the_next_pass(rng):
    net = nn.Sequential(nn.Linear(3, 2, dtype=np.float64, rng=0), nn.ReLU())
    with pytest.raises(ValueError):
        net(rng.standard_normal((2, 5)))   # wrong width: raises inside the pass
    y = net(rng.standard_normal((2, 3)))
    assert net.backward(np.ones_like(y)).shape == (2, 3)
