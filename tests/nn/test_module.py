"""Module and Parameter mechanics: registration, traversal, modes,
gradient accumulation, frozen parameters, no_grad caching, state dicts."""
import numpy as np
import pytest

import convcore
from convcore import nn
from nn_helpers import one_kernel_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def small_net(dtype=np.float64):
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, dtype=dtype, rng=0),
                         nn.Identity(),
                         nn.Sequential(nn.Conv2d(3, 2, 1, dtype=dtype, rng=1)),
                         nn.Flatten())


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, rng=0)
        self.register_buffer("count", np.zeros(2, dtype=np.float32))
        self.plain = 3


def test_registration_and_traversal():
    m = Custom()
    assert [n for n, _ in m.named_parameters()] == ["conv.weight", "conv.bias"]
    assert [n for n, _ in m.named_modules()] == ["", "conv"]
    assert list(m.children()) == [m.conv]
    assert list(m.state_dict()) == ["count", "conv.weight", "conv.bias"]
    assert m.plain == 3 and "plain" not in m.state_dict()
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        m.missing
    with pytest.raises(TypeError, match="cannot assign ndarray to parameter 'weight'"):
        m.conv.weight = np.zeros(3)


def test_shared_parameter_listed_once():
    conv = nn.Conv2d(2, 2, 1, rng=0)
    m = nn.Sequential(conv, nn.ReLU(), conv)
    assert len(m.parameters()) == 2


def test_train_eval_propagate():
    m = nn.Sequential(nn.Dropout(0.5), nn.Sequential(nn.BatchNorm2d(3)))
    assert m.eval() is m
    assert not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())


def test_gradients_accumulate_until_zero_grad(rng):
    conv = nn.Conv2d(2, 3, 3, dtype=np.float64, rng=0)
    x = rng.standard_normal((2, 2, 5, 5))
    g = rng.standard_normal((2, 3, 3, 3))
    conv(x)
    conv.backward(g)
    first = conv.weight.grad.copy()
    conv(x)
    conv.backward(g)
    np.testing.assert_allclose(conv.weight.grad, 2 * first, rtol=1e-12)
    conv.zero_grad()
    assert conv.weight.grad is None and conv.bias.grad is None
    conv(x)
    conv.backward(g)
    conv.zero_grad(set_to_none=False)
    assert np.all(conv.weight.grad == 0)


def test_frozen_parameters_get_no_gradient(rng):
    net = small_net()
    net[0].requires_grad_(False)
    x = rng.standard_normal((2, 2, 4, 4))
    y = net(x)
    gx = net.backward(np.ones_like(y))
    assert net[0].weight.grad is None and net[0].bias.grad is None
    assert net[2][0].weight.grad is not None
    assert gx.shape == x.shape  # the input gradient still flows through
    opt = convcore.optim.SGD(net.parameters(), lr=0.1)
    before = net[0].weight.data.copy()
    opt.step()
    np.testing.assert_array_equal(net[0].weight.data, before)


def test_first_layer_skips_input_gradient(rng):
    net = small_net()
    net[0].first_layer = True
    y = net(rng.standard_normal((1, 2, 4, 4)))
    assert net.backward(np.ones_like(y)) is None
    assert net[0].weight.grad is not None


def test_no_grad_caches_nothing(rng):
    net = nn.Sequential(nn.Conv2d(2, 3, 3, dtype=np.float64, rng=0), nn.Flatten())
    x = rng.standard_normal((1, 2, 4, 4))
    with convcore.no_grad():
        y_inf = net(x)
    assert all(m._cache is None for m in net.modules())
    with pytest.raises(RuntimeError, match="nothing saved for backward"):
        net.backward(np.ones_like(y_inf))
    np.testing.assert_array_equal(net(x), y_inf)
    assert net[0]._cache is not None and net[0]._cache[0] is x
    net.backward(np.ones_like(y_inf))
    assert net[0]._cache is None  # released by backward


def test_state_dict_round_trip(rng):
    a, b = small_net(), small_net()
    b[0].weight.data[...] = 0
    sd = a.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "2.0.weight", "2.0.bias"]
    sd_copy = {k: v.copy() for k, v in sd.items()}
    b.load_state_dict(sd)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd_copy[k])
    sd["0.weight"][...] = 7  # state_dict holds copies
    assert not np.any(a[0].weight.data == 7)
    x = rng.standard_normal((2, 2, 4, 4))
    np.testing.assert_array_equal(a(x), b(x))


def test_batchnorm_state_dict_keys():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    sd = m.state_dict()
    assert list(sd) == ["0.weight", "1.weight", "1.bias", "1.running_mean",
                        "1.running_var", "1.num_batches_tracked"]
    assert sd["1.num_batches_tracked"].dtype == np.int64 and sd["1.num_batches_tracked"].shape == ()


@pytest.mark.parametrize("edit, exc, fragment", [
    (lambda d: d.pop("0.bias"), ValueError, "missing keys ['0.bias']"),
    (lambda d: d.update({"9.weight": np.zeros(1)}), ValueError, "unexpected keys ['9.weight']"),
    (lambda d: d.update({"0.weight": np.zeros((3, 2, 3, 2))}), ValueError,
     "'0.weight' has shape (3, 2, 3, 2) but the model expects (3, 2, 3, 3)"),
    (lambda d: d.update({"2.0.bias": d["2.0.bias"].astype(np.float32)}), TypeError,
     "'2.0.bias' has dtype float32 but the model expects float64"),
])
def test_load_state_dict_errors_name_the_key(edit, exc, fragment):
    net = small_net()
    before = net.state_dict()
    sd = small_net().state_dict()
    sd["0.bias"] = sd["0.bias"] + 1
    edit(sd)
    with pytest.raises(exc) as info:
        net.load_state_dict(sd)
    assert fragment in str(info.value)
    for k, v in net.state_dict().items():  # nothing written by a failed load
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_non_strict():
    net = small_net()
    sd = small_net().state_dict()
    del sd["0.bias"]
    sd["extra"] = np.zeros(1)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert missing == ["0.bias"] and unexpected == ["extra"]
    np.testing.assert_array_equal(net[0].weight.data, sd["0.weight"])


def test_layer_dtype_argument():
    assert nn.Conv2d(1, 1, 1, dtype=np.float64).weight.dtype == np.float64
    assert nn.Conv2d(1, 1, 1).weight.dtype == np.float32
    with pytest.raises(TypeError, match="Conv2d: dtype must be float32 or float64"):
        nn.Conv2d(1, 1, 1, dtype=np.int32)
    with pytest.raises(TypeError, match="Parameter: data must be float32 or float64"):
        nn.Parameter(np.zeros(2, dtype=np.int64))


def test_backward_needs_forward():
    with pytest.raises(RuntimeError, match="Conv2d.backward: nothing saved"):
        nn.Conv2d(1, 1, 1).backward(np.zeros((1, 1, 1, 1), np.float32))


def test_repr_lists_children():
    text = repr(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, bias=False), nn.ReLU()))
    assert "(0): Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2), bias=False)" in text
    assert "(1): ReLU()" in text


def test_to_converts_parameters_and_float_buffers(rng):
    net = nn.Sequential(nn.Conv2d(2, 3, 3, rng=0), nn.BatchNorm2d(3))
    w32 = net[0].weight.data.copy()
    assert net.to(np.float64) is net
    assert net[0].weight.dtype == np.float64 and net[1].running_var.dtype == np.float64
    assert net[1].num_batches_tracked.dtype == np.int64
    np.testing.assert_array_equal(net[0].weight.data, w32)
    y = net[0](rng.standard_normal((1, 2, 4, 4)))
    assert y.dtype == np.float64
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        net.to(np.int8)


def test_accumulate_grad_keeps_only_owned_arrays():
    p = nn.Parameter(np.zeros((2, 3), np.float32))
    mine = np.ones((2, 3), np.float32)
    p.accumulate_grad(mine)                 # the caller's array: copied
    assert p.grad is not mine
    p.accumulate_grad(mine)
    np.testing.assert_array_equal(mine, 1.0)
    np.testing.assert_array_equal(p.grad, 2.0)
    p.zero_grad()
    fresh = np.full((2, 3), 3.0, np.float32)
    p.accumulate_grad(fresh, owned=True)    # a layer's fresh gradient: kept
    assert p.grad is fresh
    for g in (np.ones((3, 2), np.float32).T, np.ones((2, 3))):  # a view; float64
        p.zero_grad()
        p.accumulate_grad(g, owned=True)
        assert p.grad is not g and p.grad.dtype == np.float32 and p.grad.flags.c_contiguous


def test_layer_gradients_are_not_copied_but_accumulate():
    conv = nn.Conv2d(2, 3, 3)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    conv.backward(np.ones_like(conv.forward(x)))
    first = conv.weight.grad.copy()
    conv.backward(np.ones_like(conv.forward(x)))
    np.testing.assert_allclose(conv.weight.grad, 2 * first, rtol=1e-6)
