"""Frozen parameters in backward: no weight gradient for them, and a
backward that stops at the first trainable layer when nothing needs the
input gradient (a network starting with a first_layer). The trainable
layers' gradients must equal those of the full backward, fused or not."""
import numpy as np
import pytest

import convcore
from convcore import models, nn
from convcore.functional import linear_backward
from convcore.training import freeze, unfreeze
from gradcheck import directional_check


@pytest.fixture(params=[True, False], ids=["fused", "unfused"])
def fusion(request):
    previous = nn.set_fusion(request.param)
    yield request.param
    nn.set_fusion(previous)


def _count_backward(module, calls):
    """Record module's backward calls in `calls` (an instance attribute,
    so fusion runs it on its own: the call is seen either way)."""
    original = module.backward

    def backward(grad_y):
        calls.append(module)
        return original(grad_y)
    module.backward = backward


def _net(rng):
    """conv-BN-ReLU, conv-ReLU, pool, a residual block, head: float64."""
    kw = dict(rng=rng, dtype=np.float64)
    body = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, bias=False, **kw),
                         nn.BatchNorm2d(6, dtype=np.float64))
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(4, dtype=np.float64),
        nn.ReLU(), nn.Conv2d(4, 6, 3, **kw), nn.ReLU(), nn.MaxPool2d(2),
        nn.Residual(body), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 5, **kw), nn.ReLU(),
        nn.Linear(5, 3, **kw))
    return net


def _grads(net, x, g):
    net.zero_grad()
    net(x)
    gx = net.backward(g)
    return gx, {k: (None if p.grad is None else p.grad.copy())
                for k, p in net.named_parameters()}


@pytest.mark.parametrize("frozen", [["0", "1"], ["0", "1", "3"], ["0", "1", "3", "6"],
                                    ["0", "1", "3", "6", "9"]])
def test_trainable_gradients_equal_the_full_backward(rng, fusion, frozen):
    net = _net(np.random.default_rng(1))
    x = rng.standard_normal((2, 3, 6, 6))
    g = rng.standard_normal((2, 3))
    _, full = _grads(net, x, g)
    freeze(net, *frozen)
    net[0].first_layer = True
    gx, part = _grads(net, x, g)
    assert gx is None
    for k, v in part.items():
        if k.split(".")[0] in frozen:
            assert v is None, k
        else:
            np.testing.assert_allclose(v, full[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_backward_stops_at_the_first_trainable_layer(rng, fusion):
    net = _net(np.random.default_rng(1))
    net[0].first_layer = True
    calls = []
    for m in net:
        _count_backward(m, calls)
    freeze(net, "0", "1", "3", "6")
    net(rng.standard_normal((2, 3, 6, 6)))
    assert net.backward(rng.standard_normal((2, 3))) is None
    # from the last layer down to the first trainable one, the Linear "9"
    assert calls == [net[11], net[10], net[9]]


def test_everything_frozen_runs_no_backward(rng):
    net = _net(np.random.default_rng(1))
    net[0].first_layer = True
    calls = []
    for m in net:
        _count_backward(m, calls)
    freeze(net)
    net(rng.standard_normal((1, 3, 6, 6)))
    assert net.backward(rng.standard_normal((1, 3))) is None
    assert calls == [] and all(p.grad is None for p in net.parameters())


def test_without_first_layer_the_input_gradient_still_flows(rng, fusion):
    """A plain Sequential's caller may want grad_x (an adversarial input):
    frozen layers only skip their weight gradients."""
    net = _net(np.random.default_rng(1))
    x = rng.standard_normal((2, 3, 6, 6))
    g = rng.standard_normal((2, 3))
    gx_full, _ = _grads(net, x, g)
    freeze(net)
    net.eval()   # batch norm on running statistics: y is then a fixed function of x
    gx, grads = _grads(net, x, g)
    assert all(v is None for v in grads.values())
    directional_check(lambda a: net(a), [x], [gx], g, rng)


def test_skip_input_grad_once_is_for_one_backward(rng):
    lin = nn.Linear(4, 3, rng=0, dtype=np.float64)
    x = rng.standard_normal((2, 4))
    g = rng.standard_normal((2, 3))
    lin(x)
    lin.skip_input_grad_once()
    assert lin.backward(g) is None
    lin(x)
    np.testing.assert_allclose(lin.backward(g), g @ lin.weight.data, rtol=1e-12)


def test_frozen_layers_get_no_gradient_alone(rng):
    conv = nn.Conv2d(2, 3, 3, rng=0, dtype=np.float64)
    lin = nn.Linear(4, 3, rng=0, dtype=np.float64)
    for layer, x, gshape in [(conv, rng.standard_normal((1, 2, 4, 4)), (1, 3, 2, 2)),
                             (lin, rng.standard_normal((2, 4)), (2, 3))]:
        layer.requires_grad_(False)
        layer(x)
        gx = layer.backward(rng.standard_normal(gshape))
        assert gx.shape == x.shape
        assert layer.weight.grad is None and layer.bias.grad is None


def _concat(kw):
    return nn.Concat(nn.Sequential(nn.Conv2d(4, 3, 1, **kw), nn.ReLU(),
                                   nn.Conv2d(3, 4, 3, padding=1, **kw)),
                     nn.Sequential(nn.Conv2d(4, 2, 1, **kw)))


def _residual(kw):
    return nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, **kw), nn.ReLU(),
                                     nn.Conv2d(4, 6, 1, **kw)),
                       nn.Sequential(nn.Conv2d(4, 6, 1, **kw)))


@pytest.mark.parametrize("block, frozen, ran", [
    (_concat, "1.0.0", ["1.0.2", "1.1.0"]),
    (_residual, "1.body.0", ["1.body.2", "1.shortcut.0"]),
])
def test_residual_and_concat_pass_the_skip_to_their_branches(rng, fusion, block, frozen, ran):
    """A block whose input gradient nobody needs: each branch stops at its
    own first trainable layer, and the trainable gradients are the full
    backward's."""
    kw = dict(rng=np.random.default_rng(2), dtype=np.float64)
    net = nn.Sequential(nn.Conv2d(2, 4, 1, **kw), block(kw))
    net[0].first_layer = True
    x = rng.standard_normal((2, 2, 5, 5))
    g = rng.standard_normal((2, 6, 5, 5))
    _, full = _grads(net, x, g)
    freeze(net, "0", frozen)
    calls = []
    named = dict(net.named_modules())
    for name in [frozen] + ran:
        _count_backward(named[name], calls)
    _, part = _grads(net, x, g)
    names = {id(m): n for n, m in named.items()}
    assert sorted(names[id(m)] for m in calls) == ran   # not the frozen first layer
    for k, v in part.items():
        if k.startswith(("0.", frozen + ".")):
            assert v is None, k
        else:
            np.testing.assert_allclose(v, full[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_resnet_head_only_fine_tune_matches_torch(rng):
    torch = pytest.importorskip("torch")
    from convcore.bench.networks import copy_weights, to_torch
    model = models.resnet20(num_classes=4, rng=3, dtype=np.float64)
    tmodel = to_torch(model, torch)
    copy_weights(model, tmodel, torch)
    freeze(model)
    unfreeze(model, "layer3.2", "fc")
    for name, p in tmodel.named_parameters():
        p.requires_grad_(name.startswith(("layer3.2.", "fc.")))
    x = rng.standard_normal((3, 3, 16, 16))
    g = rng.standard_normal((3, 4))
    previous = convcore.set_num_threads(1)
    try:
        model(x)
        assert model.backward(g) is None
    finally:
        convcore.set_num_threads(previous)
    tmodel(torch.from_numpy(x)).backward(torch.from_numpy(g))
    tparams = dict(tmodel.named_parameters())
    for k, p in model.named_parameters():
        if tparams[k].grad is None:
            assert p.grad is None, k
        else:
            np.testing.assert_allclose(p.grad, tparams[k].grad.numpy(), rtol=1e-9,
                                       atol=1e-11, err_msg=k)
    assert model.fc.weight.grad is not None and model.layer3[2].body.conv1.weight.grad \
        is not None


def test_linear_backward_computes_only_what_is_asked(rng):
    x = rng.standard_normal((3, 4))
    w = rng.standard_normal((2, 4))
    g = rng.standard_normal((3, 2))
    gx, gw, gb = linear_backward(g, x, w, input_grad=False)
    assert gx is None
    np.testing.assert_allclose(gw, g.T @ x, rtol=1e-12)
    np.testing.assert_allclose(gb, g.sum(0), rtol=1e-12)
    gx, gw, gb = linear_backward(g, x, w, bias=False, weight_grad=False)
    assert gw is None and gb is None
    np.testing.assert_allclose(gx, g @ w, rtol=1e-12)
    with pytest.raises(TypeError, match="input_grad"):
        linear_backward(g, x, w, input_grad="no")


def test_a_skip_not_read_does_not_outlive_the_backward(rng, fusion):
    """The first trainable layer is a batch norm (it always computes its
    input gradient): the word passed to it must not reach a later backward
    of its own, nor a layer after it."""
    kw = dict(rng=np.random.default_rng(0), dtype=np.float64)
    net = nn.Sequential(nn.Conv2d(2, 3, 1, **kw), nn.BatchNorm2d(3, dtype=np.float64),
                        nn.Conv2d(3, 2, 1, **kw))
    net[0].first_layer = True
    freeze(net, "0")
    x = rng.standard_normal((2, 2, 3, 3))
    net(x)
    net.backward(rng.standard_normal((2, 2, 3, 3)))
    assert all("_skip_input_grad" not in m.__dict__ for m in net.modules())
