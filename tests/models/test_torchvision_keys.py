"""torchvision's state-dict keys in both directions: a torchvision ResNet's
state dict loads into the zoo's as it is, a zoo model's goes back into the
torchvision architecture (built in plain torch: torchvision_peers), both
computing the same function; a mismatch fails with a short message."""
import numpy as np
import pytest

import convcore
from convcore import init, models, nn

ZOO_IN_TORCHVISION = ["resnet18", "resnet34", "resnet50", "vgg11", "vgg11_bn", "vgg13",
                      "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "mobilenet_v2",
                      "googlenet", "alexnet", "alexnet_torchvision", "googlenet_torchvision"]


@pytest.fixture
def one_thread():
    previous = convcore.set_num_threads(1)
    yield
    convcore.set_num_threads(previous)


@pytest.mark.parametrize("name", ZOO_IN_TORCHVISION)
def test_to_torchvision_keys_and_back_is_the_identity(name):
    with init.skip_init():
        state = models.get_model(name).state_dict()
    back = models.torchvision_keys(models.to_torchvision_keys(state))
    assert list(back) == list(state)
    assert all(back[k] is state[k] for k in state)   # arrays kept, not copied


def test_resnet_keys_in_torchvision_spelling():
    with init.skip_init():
        tv = models.to_torchvision_keys(models.resnet50())
    assert "layer1.0.conv3.weight" in tv and "layer1.0.downsample.1.running_var" in tv
    assert not any(".body." in k or ".shortcut." in k for k in tv)


def _compare_eval(model, tmodel, torch, rng, size):
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    with convcore.no_grad():
        y = model.eval()(x)
    with torch.no_grad():
        ty = tmodel.eval()(torch.from_numpy(x)).numpy()
    scale = np.abs(ty).max()
    assert scale > 0
    np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_state_dict_loads_as_it_is(rng, one_thread, depth):
    torch = pytest.importorskip("torch")
    import torchvision_peers
    tmodel = torchvision_peers.resnet(depth, num_classes=7, seed=depth)
    with init.skip_init():
        model = models.resnet(depth, num_classes=7)
    result = model.load_state_dict(tmodel.state_dict())   # tensors, torchvision's keys
    assert result.missing_keys == [] and result.unexpected_keys == []
    _compare_eval(model, tmodel, torch, rng, 64)


@pytest.mark.parametrize("transform_input", [False, True])
def test_torchvision_googlenet_loads_as_it_is_without_aux(rng, one_thread, transform_input):
    torch = pytest.importorskip("torch")
    import torchvision_peers
    tmodel = torchvision_peers.googlenet(num_classes=6, transform_input=transform_input, seed=2)
    state = tmodel.state_dict()
    assert any(k.startswith("aux1.") for k in state)
    with init.skip_init():
        model = models.googlenet_torchvision(num_classes=6, transform_input=transform_input)
    model.load_state_dict(state)
    _compare_eval(model, tmodel, torch, rng, 64)
    back = models.to_torchvision_keys(model)
    assert set(back) == {k for k in state if not k.startswith(("aux1.", "aux2."))}


def test_torchvision_alexnet_loads_as_it_is(rng, one_thread):
    torch = pytest.importorskip("torch")
    import torchvision_peers
    tmodel = torchvision_peers.alexnet(num_classes=4, seed=3)
    with init.skip_init():
        model = models.alexnet_torchvision(num_classes=4)
    model.load_state_dict(tmodel.state_dict())
    assert list(models.to_torchvision_keys(model)) == list(tmodel.state_dict())
    _compare_eval(model, tmodel, torch, rng, 100)


def test_transform_input_gradient(rng):
    t = models.TransformInput()
    x = rng.standard_normal((2, 3, 2, 3))
    g = rng.standard_normal(x.shape)
    t(x)
    from gradcheck import directional_check
    directional_check(t.forward, [x], [t.backward(g)], g, rng)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*\(2, 4, 2, 3\)"):
        t(np.zeros((2, 4, 2, 3)))


def test_round_trip_into_the_torchvision_architecture(rng, one_thread):
    torch = pytest.importorskip("torch")
    import torchvision_peers
    model = models.resnet18(num_classes=5, rng=4)
    for m in model.modules():   # non-trivial statistics, as a trained model's
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean[...] = rng.uniform(-0.2, 0.2, m.num_features)
            m.running_var[...] = rng.uniform(0.5, 1.5, m.num_features)
            m.bump_buffers()
    tmodel = torchvision_peers.resnet(18, num_classes=5, seed=1)
    state = {k: torch.from_numpy(v) for k, v in models.to_torchvision_keys(model).items()}
    tmodel.load_state_dict(state, strict=True)
    _compare_eval(model, tmodel, torch, rng, 48)


def test_googlenet_aux_classifier_keys_are_dropped():
    with init.skip_init():
        model = models.googlenet(num_classes=3)
    state = model.state_dict()
    state["fc.bias"] = np.arange(3, dtype=np.float32)
    aux = {"aux1.conv.conv.weight": np.zeros((128, 512, 1, 1), np.float32),
           "aux2.fc2.bias": np.zeros(1000, np.float32)}
    assert list(models.torchvision_keys({**state, **aux})) == list(state)
    model.load_state_dict({**aux, **state})
    np.testing.assert_array_equal(model.fc.bias.data, [0, 1, 2])


def test_mismatch_message_is_short_and_names_the_mapping():
    with init.skip_init():
        model = models.resnet18()
        other = models.resnet34()
    with pytest.raises(ValueError) as info:
        model.load_state_dict(other.state_dict())
    message = str(info.value)
    assert len(message) < 600
    assert "convcore.models.torchvision_keys" in message
    assert "unexpected keys ['layer1.2.body.conv1.weight'" in message
    n = sum(1 for k in other.state_dict() if k not in model.state_dict())
    assert f"({n} in all)" in message


def test_only_modules_with_a_key_map_rename():
    """A user's Sequential of the same layers has no key map: torchvision's
    keys fail there (naming the function) and load once renamed by it."""
    from collections import OrderedDict
    with init.skip_init():
        zoo = models.resnet18(num_classes=2)
    plain = nn.Sequential(OrderedDict(zoo.named_children()))
    tv = models.to_torchvision_keys(zoo)
    with pytest.raises(ValueError, match=r"missing keys \['layer1.0.body.conv1.weight', "):
        plain.load_state_dict(tv)
    assert plain.load_state_dict(models.torchvision_keys(tv)) == ([], [])


def test_torchvision_keys_with_wrong_head_name_the_shape():
    with init.skip_init():
        model = models.resnet18(num_classes=10)
        state = models.to_torchvision_keys(models.resnet18(num_classes=1000))
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(1000, 512\) but the model "
                                         r"expects \(10, 512\)"):
        model.load_state_dict(state)


@pytest.mark.parametrize("bad", [3, ["conv1.weight"]])
def test_bad_arguments_name_the_function(bad):
    with pytest.raises(TypeError, match="to_torchvision_keys"):
        models.to_torchvision_keys(bad)
    with pytest.raises(TypeError, match="torchvision_keys"):
        models.torchvision_keys(bad)
