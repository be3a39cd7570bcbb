"""Model zoo: published parameter counts, output shapes at reduced input
sizes, torchvision state-dict layout, argument errors, and gradients
through the ResNet blocks. Large networks are built inside skip_init()
(zero weights, no random draws) where only shapes and counts matter."""
import numpy as np
import pytest
from gradcheck import directional_check

import convcore
from convcore import init, models


@pytest.fixture(autouse=True)
def one_thread():
    # Small batches on shared cores: one thread avoids OpenMP spin-waiting.
    previous = convcore.set_num_threads(1)
    yield
    convcore.set_num_threads(previous)


# (builder, kwargs, input shape, published/expected parameter count)
PARAM_COUNTS = [
    ("lenet5", {}, (1, 32, 32), 61_706),           # paper: "60,000" (sparse C3, see lenet.py)
    ("lenet5", {"input_size": 28}, (1, 28, 28), 61_706),
    ("alexnet", {}, (3, 227, 227), 62_378_344),    # single tower
    ("alexnet", {"towers": 2}, (3, 227, 227), 60_965_224),  # the paper's two GPUs
    ("vgg11", {}, (3, 224, 224), 132_863_336),     # paper Table 2: 133M
    ("vgg11_lrn", {}, (3, 224, 224), 132_863_336),  # LRN has no parameters
    ("vgg13", {}, (3, 224, 224), 133_047_848),     # 133M
    ("vgg16_c", {}, (3, 224, 224), 133_638_952),   # 134M
    ("vgg16", {}, (3, 224, 224), 138_357_544),     # 138M
    ("vgg16_bn", {}, (3, 224, 224), 138_365_992),  # torchvision's vgg16_bn
    ("vgg19", {}, (3, 224, 224), 143_667_240),     # 144M
    ("googlenet", {}, (3, 224, 224), 6_998_552),   # ~6.8M in the paper's rounded table
    ("resnet18", {}, (3, 224, 224), 11_689_512),
    ("resnet34", {}, (3, 224, 224), 21_797_672),
    ("resnet50", {}, (3, 224, 224), 25_557_032),
    ("resnet20", {}, (3, 32, 32), 269_722),        # paper: 0.27M
    ("resnet20", {"shortcut": "B"}, (3, 32, 32), 272_474),
]


@pytest.mark.parametrize("name,kwargs,shape,expected", PARAM_COUNTS,
                         ids=[f"{p[0]}-{'-'.join(map(str, p[1].values())) or 'std'}"
                              for p in PARAM_COUNTS])
def test_parameter_counts_match_published(name, kwargs, shape, expected):
    with init.skip_init():
        model = models.get_model(name, **kwargs)
    s = model.summary(shape)
    assert s.total_params == expected
    assert s.trainable_params == expected
    assert s.rows[-1].output_shape == (1000 if name not in ("lenet5", "resnet20") else 10,)


def test_vgg_summary_shapes_and_flops_at_224():
    with init.skip_init():
        s = models.vgg16().summary((3, 224, 224))
    convs = [r for r in s.rows if r.kind == "Conv2d"]
    assert len(convs) == 13
    assert convs[0].output_shape == (64, 224, 224) and convs[-1].output_shape == (512, 14, 14)
    # 15.5 G multiply-adds is VGG-16's well-known cost
    assert 15.4e9 < s.total_macs < 15.6e9


def test_googlenet_follows_the_inception_table():
    with init.skip_init():
        model = models.googlenet()
    s = model.summary((3, 224, 224))
    by_name = {r.name: r for r in s.rows}
    assert by_name["maxpool2"].output_shape == (192, 28, 28)
    assert by_name["maxpool4"].output_shape == (480, 14, 14)
    assert by_name["maxpool5"].output_shape == (832, 7, 7)
    for block, widths in models.INCEPTION_TABLE.items():
        c1, _, c3, _, c5, pp = widths
        # the last conv of each branch is the module's output slice
        outs = [r.output_shape[0] for r in s.rows
                if r.name.startswith(f"inception{block}.") and r.kind == "Conv2d"]
        assert sum(outs[i] for i in (0, 2, 4, 5)) == c1 + c3 + c5 + pp
        assert outs[0] == c1 and outs[2] == c3 and outs[4] == c5 and outs[5] == pp


@pytest.mark.parametrize("input_size", [32, 28, 8, (12, 10), 64])
@pytest.mark.parametrize("activation,pool", [("tanh", "avg"), ("relu", "max")])
def test_lenet5_forward_shapes(rng, input_size, activation, pool):
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    model = models.lenet5(num_classes=7, in_channels=2, input_size=input_size,
                          activation=activation, pool=pool, rng=0)
    x = rng.standard_normal((3, 2, h, w)).astype(np.float32)
    y = model(x)
    assert y.shape == (3, 7) and y.dtype == np.float32 and np.all(np.isfinite(y))
    assert model.backward(np.ones_like(y)) is None  # first layer: no input gradient
    assert all(p.grad is not None for p in model.parameters())


def test_lenet5_28x28_is_the_32x32_network_on_a_padded_field(rng):
    a = models.lenet5(input_size=28, rng=5)
    b = models.lenet5(input_size=32, rng=5)
    x = rng.random((2, 1, 28, 28)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    np.testing.assert_allclose(a(x), b(padded), rtol=1e-5, atol=1e-6)


def test_lenet5_8x8_variant_layout():
    model = models.lenet5(input_size=8)
    names = [n for n, _ in model.named_children()]
    assert "s2" not in names and names[:2] == ["c1", "act1"]
    assert model.c5.kernel_size == (4, 4)
    assert model.summary((1, 8, 8)).rows[-1].output_shape == (10,)


# (builder, kwargs, input shape): reduced sizes where the architecture allows
FORWARD_CASES = [
    ("alexnet", {"num_classes": 5, "input_size": 67, "hidden": 32}, (3, 67, 67)),
    ("vgg11", {"num_classes": 5, "input_size": 32, "hidden": 32}, (3, 32, 32)),
    ("vgg11_lrn", {"num_classes": 5, "input_size": 32, "hidden": 32}, (3, 32, 32)),
    ("vgg13_bn", {"num_classes": 5, "input_size": 32, "hidden": 32}, (3, 32, 32)),
    ("vgg16_c", {"num_classes": 5, "input_size": 32, "hidden": 32}, (3, 32, 32)),
    ("googlenet", {"num_classes": 5, "input_size": 47}, (3, 47, 47)),
    ("resnet18", {"num_classes": 5, "input_size": 32}, (3, 32, 32)),
    ("resnet50", {"num_classes": 5, "input_size": 32}, (3, 32, 32)),
    ("resnet20", {"num_classes": 5}, (3, 32, 32)),
    ("resnet20", {"num_classes": 5, "in_channels": 1, "input_size": 8}, (1, 8, 8)),
]


@pytest.mark.parametrize("name,kwargs,shape", FORWARD_CASES,
                         ids=[f"{c[0]}-{c[2][1]}" for c in FORWARD_CASES])
def test_forward_one_small_batch(rng, name, kwargs, shape):
    with init.skip_init():
        model = models.get_model(name, **kwargs)
    model.eval()  # batch norm on one image needs running statistics
    x = rng.standard_normal((1,) + shape).astype(np.float32)
    with convcore.no_grad():
        y = model(x)
    assert y.shape == (1, kwargs["num_classes"])
    assert model.summary(shape).rows[-1].output_shape == (kwargs["num_classes"],)


def test_resnet20_trains_in_both_modes_and_float64(rng):
    model = models.resnet20(num_classes=4, in_channels=1, input_size=8, rng=1,
                            dtype=np.float64)
    x = rng.standard_normal((2, 1, 8, 8))
    y = model(x)
    assert y.dtype == np.float64 and y.shape == (2, 4)
    model.backward(np.ones_like(y))
    conv1 = model.conv1
    assert conv1.weight.grad is not None and conv1.weight.grad.dtype == np.float64


def _block_gradcheck(block, x, rng):
    block.eval()  # fixed statistics: forward is a smooth function of x
    upstream = rng.standard_normal(block(x).shape)
    block(x)
    gx = block.backward(upstream)
    with convcore.no_grad():
        directional_check(lambda a: block(a), [x], [gx], upstream, rng, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["basic-A", "basic-B", "basic-identity", "bottleneck"])
def test_resnet_block_input_gradient(rng, kind):
    x = rng.standard_normal((2, 4, 6, 6)) + 0.5
    kw = {"rng": 3, "dtype": np.float64}
    if kind == "basic-A":
        block = models.basic_block(4, 8, 2, "A", **kw)
    elif kind == "basic-B":
        block = models.basic_block(4, 8, 2, "B", **kw)
    elif kind == "basic-identity":
        block = models.basic_block(4, 4, 1, **kw)
    else:
        block = models.bottleneck_block(4, 2, 2, **kw)
    # non-trivial running statistics so eval-mode BN is not the identity
    for m in block.modules():
        if hasattr(m, "running_var") and m.running_var is not None:
            m.running_mean[:] = rng.standard_normal(m.running_mean.shape) * 0.1
            m.running_var[:] = rng.random(m.running_var.shape) + 0.5
    _block_gradcheck(block, x, rng)


def test_pad_shortcut_matches_option_a(rng):
    sc = models.PadShortcut(4, 8, 2)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    y = sc(x)
    assert y.shape == (2, 8, 3, 3) == sc.output_shape(x.shape)
    np.testing.assert_array_equal(y[:, 2:6], x[:, :, ::2, ::2])
    assert not y[:, :2].any() and not y[:, 6:].any()
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = sc.backward(g)
    expected = np.zeros_like(x)
    expected[:, :, ::2, ::2] = g[:, 2:6]
    np.testing.assert_array_equal(gx, expected)


def _torchvision_resnet18_keys():
    """torchvision.models.resnet18().state_dict() keys, spelled out."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{b}" for b in bn]
    for layer in range(1, 5):
        for block in range(2):
            pre = f"layer{layer}.{block}."
            keys += [pre + "conv1.weight"] + [pre + f"bn1.{b}" for b in bn]
            keys += [pre + "conv2.weight"] + [pre + f"bn2.{b}" for b in bn]
            if layer > 1 and block == 0:
                keys += [pre + "downsample.0.weight"] + [pre + f"downsample.1.{b}" for b in bn]
    return keys + ["fc.weight", "fc.bias"]


def test_torchvision_resnet18_state_dict_loads_after_renaming():
    with init.skip_init():
        model = models.resnet18()
    ours = model.state_dict()
    tv_keys = _torchvision_resnet18_keys()
    mapped = models.torchvision_keys({k: k for k in tv_keys})
    assert sorted(mapped) == sorted(ours)
    assert mapped["layer1.0.body.conv1.weight"] == "layer1.0.conv1.weight"
    assert mapped["layer2.0.shortcut.1.running_var"] == "layer2.0.downsample.1.running_var"
    # a state dict in torchvision's names loads strictly once renamed
    fake = {tk: np.full_like(ours[ok], 0.5) for ok, tk in mapped.items()}
    model.load_state_dict(models.torchvision_keys(fake))
    assert np.all(model.layer4[1].body.conv2.weight.data == 0.5)


def test_vgg16_keys_follow_torchvision():
    with init.skip_init():
        keys = list(models.vgg16().state_dict())
    conv_idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    expected = [f"features.{i}.{p}" for i in conv_idx for p in ("weight", "bias")]
    expected += [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert keys == expected


def test_same_seed_same_weights_different_seed_different():
    a = models.lenet5(rng=7).state_dict()
    b = models.lenet5(rng=7).state_dict()
    c = models.lenet5(rng=8).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["c1.weight"], c["c1.weight"])


@pytest.mark.parametrize("call,exc,fragment", [
    (lambda: models.lenet5(activation="sigmoid"), ValueError, "activation"),
    (lambda: models.lenet5(pool="median"), ValueError, "pool"),
    (lambda: models.lenet5(num_classes=0), ValueError, "num_classes"),
    (lambda: models.lenet5(input_size=2), ValueError, "input_size"),
    (lambda: models.lenet5(input_size=2.5), TypeError, "input_size"),
    (lambda: models.alexnet(input_size=32), ValueError, "63x63"),
    (lambda: models.alexnet(towers=3), ValueError, "towers"),
    (lambda: models.vgg("F"), ValueError, "config"),
    (lambda: models.vgg16(input_size=16), ValueError, "input_size"),
    (lambda: models.googlenet(input_size=46), ValueError, "47x47"),
    (lambda: models.resnet(19), ValueError, "depth"),
    (lambda: models.resnet18(in_channels=0), ValueError, "in_channels"),
    (lambda: models.resnet_cifar(21), ValueError, r"6n\+2"),
    (lambda: models.resnet20(shortcut="C"), ValueError, "shortcut"),
    (lambda: models.get_model("lenet6"), ValueError, "unknown model"),
])
def test_bad_arguments(call, exc, fragment):
    with pytest.raises(exc, match=fragment):
        call()


def test_every_registered_model_takes_the_common_arguments():
    import inspect
    for name, build in models.MODELS.items():
        params = inspect.signature(build).parameters
        for arg in ("num_classes", "in_channels", "input_size"):
            assert arg in params, (name, arg)
