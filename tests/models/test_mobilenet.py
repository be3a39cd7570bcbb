"""MobileNet-v1/v2 and ReLU6: published parameter counts, torchvision's
state-dict layout, output shapes, finite-difference gradients through the
whole v2, and (with torch installed) torchvision-structured torch models
loaded with the same state dict computing the same outputs, gradients and
running statistics."""
from collections import OrderedDict

import numpy as np
import pytest
from gradcheck import directional_check

import convcore
import convcore.functional as F
from convcore import init, models, nn


@pytest.fixture(autouse=True)
def one_thread():
    previous = convcore.set_num_threads(1)
    yield
    convcore.set_num_threads(previous)


def _count(model):
    return sum(p.data.size for p in model.parameters())


# ---------------------------------------------------------------- ReLU6

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu6_forward_and_backward_against_numpy(rng, dtype):
    x = (rng.standard_normal((2, 3, 5, 7)) * 5).astype(dtype)
    x.flat[:4] = [0.0, 6.0, -0.0, 7.5]          # the kinks themselves and beyond
    before = x.copy()
    y = F.relu6(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, np.minimum(np.maximum(x.astype(np.float64), 0), 6))
    gy = rng.standard_normal(x.shape).astype(dtype)
    gx = F.relu6_backward(gy, y)
    inside = (x.astype(np.float64) > 0) & (x.astype(np.float64) < 6)
    np.testing.assert_array_equal(gx, np.where(inside, gy, 0))
    assert gx.flat[0] == 0 and gx.flat[1] == 0   # no gradient at 0 and 6 (torch's)
    np.testing.assert_array_equal(x, before)     # inputs untouched


def test_relu6_nan_and_errors():
    y = F.relu6(np.array([np.nan, -1.0, 3.0, 9.0]))
    assert np.isnan(y[0]) and list(y[1:]) == [0.0, 3.0, 6.0]
    # at a NaN the gradient passes, as relu_backward's (torch: passed in
    # float32, none in float64)
    np.testing.assert_array_equal(F.relu6_backward(np.ones(4), y), [1.0, 0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="grad_y has shape"):
        F.relu6_backward(np.ones(3), np.ones(4))


def test_relu6_matches_torch_including_kinks_and_nan(rng):
    torch = pytest.importorskip("torch")
    x = rng.uniform(-3, 9, 50)
    x[:4] = [0.0, 6.0, -0.0, 6.000001]   # (at NaN torch's gradient depends on the dtype)
    gy = rng.standard_normal(50)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = torch.nn.functional.relu6(tx)
    ty.backward(torch.from_numpy(gy))
    y = F.relu6(x)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(F.relu6_backward(gy, y), tx.grad.numpy())


def test_relu6_layer_gradcheck(rng):
    x = rng.uniform(-2, 8, size=(2, 3, 4, 4))
    x = np.where((np.abs(x) < 0.05) | (np.abs(x - 6) < 0.05), 3.0, x)
    layer = nn.ReLU6(dtype=np.float64)
    g = rng.standard_normal(x.shape)
    layer(x)
    gx = layer.backward(g)
    directional_check(layer, [x], [gx], g, rng)


# ---------------------------------------------------------------- structure

@pytest.mark.parametrize("name,count", [("mobilenet_v1", 4_231_976),
                                        ("mobilenet_v2", 3_504_872)])
def test_parameter_counts_and_registry(name, count):
    with init.skip_init():
        model = models.get_model(name)
    assert _count(model) == count
    assert models.MODELS[name] is getattr(models, name)


def test_mobilenet_v2_keys_are_torchvisions():
    with init.skip_init():
        sd = models.mobilenet_v2().state_dict()
    # torchvision's mobilenet_v2().state_dict() has 314 entries
    assert len(sd) == 314
    expected = {
        "features.0.0.weight": (32, 3, 3, 3), "features.0.1.running_var": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),   # t=1: no expansion conv
        "features.1.conv.1.weight": (16, 32, 1, 1), "features.1.conv.2.bias": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),  # expand
        "features.2.conv.1.0.weight": (96, 1, 3, 3),   # depthwise
        "features.2.conv.2.weight": (24, 96, 1, 1),    # project
        "features.3.conv.3.running_mean": (24,),       # a residual block
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1), "features.18.1.bias": (1280,),
        "classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,),
    }
    for key, shape in expected.items():
        assert sd[key].shape == shape, key
    assert not any(".body." in k for k in sd)


def test_mobilenet_v2_blocks_are_residual_where_the_shape_is_kept():
    with init.skip_init():
        feats = models.mobilenet_v2().features
    residual = [i for i, b in enumerate(feats) if isinstance(b, nn.Residual)]
    # torchvision: stride-1 repeats of each stage after its first block
    assert residual == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    assert all(isinstance(feats[i], models.InvertedResidual) for i in residual)
    assert feats[3].body is feats[3].conv
    relus = [m for m in feats.modules() if isinstance(m, nn.ReLU6)]
    assert len(relus) == 35 and not any(isinstance(m, nn.ReLU) for m in feats.modules())
    bns = [m for m in feats.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(b.eps == 1e-5 and b.momentum == 0.1 for b in bns)
    dws = [m for m in feats.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(dws) == 17 and all(d.groups == d.in_channels == d.out_channels for d in dws)


def test_mobilenet_v1_layout():
    with init.skip_init():
        model = models.mobilenet_v1()
    sd = model.state_dict()
    assert sd["conv1.weight"].shape == (32, 3, 3, 3)
    assert sd["block1.dw_conv.weight"].shape == (32, 1, 3, 3)
    assert sd["block1.pw_conv.weight"].shape == (64, 32, 1, 1)
    assert sd["block13.pw_conv.weight"].shape == (1024, 1024, 1, 1)
    assert sd["fc.weight"].shape == (1000, 1024)
    strides = [getattr(model, f"block{i}").dw_conv.stride[0] for i in range(1, 14)]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert not any(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("build", [models.mobilenet_v1, models.mobilenet_v2])
@pytest.mark.parametrize("size,batch", [(224, 1), (33, 2)])
def test_output_shapes(build, size, batch, rng):
    model = build(num_classes=7, input_size=size, rng=0).eval()
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    with convcore.no_grad():
        y = model(x)
    assert y.shape == (batch, 7) and y.dtype == np.float32 and np.all(np.isfinite(y))


def test_width_mult():
    with init.skip_init():
        half = models.mobilenet_v2(width_mult=0.5)
        v1 = models.mobilenet_v1(width_mult=0.5)
    assert half.features[0][0].out_channels == 16
    assert half.features[18][0].out_channels == 1280   # kept below width 1
    assert v1.block13.pw_conv.out_channels == 512
    assert models.mobilenet.make_divisible(0.5 * 24) == 16  # 12 -> 16 (never 10% down)
    with pytest.raises(ValueError, match="width_mult"):
        models.mobilenet_v2(width_mult=0)
    with pytest.raises(ValueError, match="input_size"):
        models.mobilenet_v1(input_size=0)
    with pytest.raises(ValueError, match="stride"):
        models.inverted_residual(8, 8, 3, 6)


def test_training_step_runs_and_lowers_the_loss(rng):
    from convcore import optim
    model = models.mobilenet_v2(num_classes=4, width_mult=0.35, input_size=32, rng=1)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    t = rng.integers(0, 4, 8)
    loss_fn = nn.CrossEntropyLoss()
    # Plain SGD: with momentum, batch norm over 1x1 maps of 8 images makes
    # the first steps chaotic (float32 rounding alone changes the path).
    opt = optim.SGD(model.parameters(), lr=0.02)
    model.classifier[0].eval()  # same batch each step: no dropout noise
    losses = []
    for _ in range(12):
        losses.append(float(loss_fn(model(x), t)))
        opt.zero_grad()
        assert model.backward(loss_fn.backward()) is None  # first layer: no input gradient
        opt.step()
    assert all(p.grad is not None and np.all(np.isfinite(p.grad)) for p in model.parameters())
    assert min(losses[-3:]) < 0.5 * losses[0]


@pytest.mark.parametrize("cin,cout,stride,t", [(8, 8, 1, 6), (8, 12, 2, 6), (8, 8, 1, 1)])
def test_inverted_residual_gradients_by_finite_differences(rng, cin, cout, stride, t):
    """Input and parameter gradients of one v2 block (BN in training mode)
    against central differences, float64. The whole network is checked
    against torch's autograd below: through 50 batch-normalised layers
    finite differences stop converging before float64 rounding sets in."""
    block = models.inverted_residual(cin, cout, stride, t, rng=2, dtype=np.float64)
    assert isinstance(block, models.InvertedResidual) == (stride == 1 and cin == cout)
    x = rng.standard_normal((3, cin, 6, 6))
    y = block(x)
    g = rng.standard_normal(y.shape)
    gx = block.backward(g)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    dw = next(c for c in convs if c.groups > 1).weight
    bn = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)][-1].weight

    def forward(x_, dw_, bn_):
        saved = dw.data, bn.data
        dw.data, bn.data = dw_, bn_
        try:
            return block(x_)
        finally:
            dw.data, bn.data = saved

    directional_check(forward, [x, dw.data.copy(), bn.data.copy()],
                      [gx, dw.grad.copy(), bn.grad.copy()], g, rng, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- torch peers

def _torch_v2(torch, num_classes):
    """torchvision.models.mobilenet_v2's structure, written out (torchvision
    itself is not a test dependency)."""
    T = torch.nn

    def cna(cin, cout, k, stride=1, groups=1):
        return T.Sequential(T.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups,
                                     bias=False), T.BatchNorm2d(cout), T.ReLU6(inplace=True))

    class InvertedResidual(T.Module):
        def __init__(self, inp, oup, stride, t):
            super().__init__()
            hidden = int(round(inp * t))
            self.use_res_connect = stride == 1 and inp == oup
            layers = [cna(inp, hidden, 1)] if t != 1 else []
            layers += [cna(hidden, hidden, 3, stride, hidden),
                       T.Conv2d(hidden, oup, 1, 1, 0, bias=False), T.BatchNorm2d(oup)]
            self.conv = T.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(T.Module):
        def __init__(self):
            super().__init__()
            feats, c = [cna(3, 32, 3, 2)], 32
            for t, cout, n, s in [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                                  [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]:
                for i in range(n):
                    feats.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                    c = cout
            feats.append(cna(c, 1280, 1))
            self.features = T.Sequential(*feats)
            self.classifier = T.Sequential(T.Dropout(0.2), T.Linear(1280, num_classes))

        def forward(self, x):
            x = T.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2()


def _torch_v1(torch, num_classes):
    T = torch.nn
    layers = [("conv1", T.Conv2d(3, 32, 3, 2, 1, bias=False)), ("bn1", T.BatchNorm2d(32)),
              ("relu1", T.ReLU())]
    c = 32
    for i, (cout, s) in enumerate([(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
                                  + [(512, 1)] * 5 + [(1024, 2), (1024, 1)], 1):
        layers.append((f"block{i}", T.Sequential(OrderedDict([
            ("dw_conv", T.Conv2d(c, c, 3, s, 1, groups=c, bias=False)),
            ("dw_bn", T.BatchNorm2d(c)), ("dw_relu", T.ReLU()),
            ("pw_conv", T.Conv2d(c, cout, 1, bias=False)),
            ("pw_bn", T.BatchNorm2d(cout)), ("pw_relu", T.ReLU())]))))
        c = cout
    layers += [("avgpool", T.AdaptiveAvgPool2d(1)), ("flatten", T.Flatten()),
               ("fc", T.Linear(c, num_classes))]
    return T.Sequential(OrderedDict(layers))


def _randomize_bn(model, rng):
    """Non-trivial BN affine parameters and running statistics, so eval mode
    is checked with more than the identity normalisation."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            dt = m.weight.data.dtype
            m.weight.data = rng.uniform(0.5, 1.5, m.num_features).astype(dt)
            m.bias.data = (0.1 * rng.standard_normal(m.num_features)).astype(dt)
            m.running_mean[...] = 0.1 * rng.standard_normal(m.num_features)
            m.running_var[...] = rng.uniform(0.5, 1.5, m.num_features)


def _mirror(torch, name, model, dtype):
    tmodel = (_torch_v2 if name == "mobilenet_v2" else _torch_v1)(torch, 5)
    tmodel = tmodel.double() if dtype == np.float64 else tmodel.float()
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    tmodel.load_state_dict(state, strict=True)   # same keys, same shapes
    return tmodel


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_same_function_as_torch_float64(rng, name):
    """Training mode (batch statistics) forward, input and parameter
    gradients, running statistics; then eval mode."""
    torch = pytest.importorskip("torch")
    model = getattr(models, name)(num_classes=5, input_size=40, rng=3, dtype=np.float64)
    _randomize_bn(model, rng)
    tmodel = _mirror(torch, name, model, np.float64)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first.first_layer = False
    for m in list(model.modules()) + list(tmodel.modules()):
        if isinstance(m, (nn.Dropout, torch.nn.Dropout)):
            m.eval()
    x = rng.standard_normal((3, 3, 40, 40))
    g = rng.standard_normal((3, 5))
    y = model(x)
    gx = model.backward(g)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = tmodel(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-8, atol=1e-11)
    tparams = dict(tmodel.named_parameters())
    for key, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[key].grad.numpy(), rtol=1e-8, atol=1e-11,
                                   err_msg=key)
    tstate = tmodel.state_dict()
    for key, v in model.state_dict().items():
        if key.endswith("running_mean") or key.endswith("running_var"):
            np.testing.assert_allclose(v, tstate[key].numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=key)
    model.eval()
    tmodel.eval()
    with convcore.no_grad():
        y = model(x)
    with torch.no_grad():
        ty = tmodel(torch.from_numpy(x))
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_same_outputs_as_torch_float32_at_224(rng, name):
    torch = pytest.importorskip("torch")
    model = getattr(models, name)(num_classes=5, rng=4).eval()
    _randomize_bn(model, rng)
    tmodel = _mirror(torch, name, model, np.float32).eval()
    x = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    with convcore.no_grad():
        y = model(x)
    with torch.no_grad():
        ty = tmodel(torch.from_numpy(x)).numpy()
    scale = np.max(np.abs(ty))
    assert np.max(np.abs(y - ty)) <= 1e-4 * scale, (np.max(np.abs(y - ty)), scale)
