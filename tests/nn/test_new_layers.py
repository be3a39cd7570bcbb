"""Layers of issue 16 item 3 (ConvTranspose2d, AdaptiveMaxPool2d, Dropout2d,
GELU, SiLU, Softmax, LogSoftmax): backward vs finite differences (float64),
float32 vs float64, nothing cached under no_grad, output_shape, and
forward/backward/state-dict keys equal to torch.nn's when torch is
installed; conv_transpose2d against a readable NumPy reference on every
algorithm; bad arguments refused with a message."""
import numpy as np
import pytest

import convcore
from convcore import F, nn
from convcore.algorithms import supported_algorithms
from convcore.functional._conv_spec import conv_spec
from convcore.functional.conv_transpose import conv_transpose_output_shape
from gradcheck import directional_check
from bad_arguments import bad_argument_test
from nn_helpers import check_module_gradients
from nn_helpers import one_kernel_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

# id -> (convcore factory(dtype), torch factory(tnn), input shape, mode)
LAYERS = {
    "conv_transpose": (
        lambda dt: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1,
                                      dtype=dt, rng=1),
        lambda t: t.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
        (2, 3, 4, 5), "train"),
    "conv_transpose_grouped_dilated": (
        lambda dt: nn.ConvTranspose2d(4, 6, (2, 3), stride=(1, 2), padding=(1, 2),
                                      groups=2, bias=False, dilation=2, dtype=dt, rng=2),
        lambda t: t.ConvTranspose2d(4, 6, (2, 3), stride=(1, 2), padding=(1, 2), groups=2,
                                    bias=False, dilation=2),
        (2, 4, 3, 4), "train"),
    # output_padding >= stride, allowed by torch when below the dilation
    "conv_transpose_output_padding_by_dilation": (
        lambda dt: nn.ConvTranspose2d(2, 3, 3, padding=1, output_padding=1, dilation=2,
                                      dtype=dt, rng=3),
        lambda t: t.ConvTranspose2d(2, 3, 3, padding=1, output_padding=1, dilation=2),
        (1, 2, 3, 4), "train"),
    "conv_transpose_1x1_batch1": (
        lambda dt: nn.ConvTranspose2d(2, 2, 1, dtype=dt, rng=4),
        lambda t: t.ConvTranspose2d(2, 2, 1), (1, 2, 1, 1), "train"),
    "conv_transpose_winograd": (
        lambda dt: nn.ConvTranspose2d(4, 6, 3, padding=1, algorithm="winograd", dtype=dt, rng=5),
        lambda t: t.ConvTranspose2d(4, 6, 3, padding=1), (2, 4, 5, 6), "train"),
    "adaptive_maxpool": (lambda dt: nn.AdaptiveMaxPool2d((2, 3), dtype=dt),
                         lambda t: t.AdaptiveMaxPool2d((2, 3)), (2, 3, 7, 5), "train"),
    "adaptive_maxpool_keep_width": (lambda dt: nn.AdaptiveMaxPool2d((3, None), dtype=dt),
                                    lambda t: t.AdaptiveMaxPool2d((3, None)), (1, 2, 5, 4),
                                    "train"),
    "dropout2d_eval": (lambda dt: nn.Dropout2d(0.4, dtype=dt), lambda t: t.Dropout2d(0.4),
                       (2, 3, 4, 4), "eval"),
    "gelu": (lambda dt: nn.GELU(dtype=dt), lambda t: t.GELU(), (3, 4, 5), "train"),
    "gelu_tanh": (lambda dt: nn.GELU("tanh", dtype=dt), lambda t: t.GELU("tanh"),
                  (3, 4, 5), "train"),
    "silu": (lambda dt: nn.SiLU(dtype=dt), lambda t: t.SiLU(), (3, 4, 5), "train"),
    "softmax": (lambda dt: nn.Softmax(1, dtype=dt), lambda t: t.Softmax(1), (2, 5, 3),
                "train"),
    "softmax_last": (lambda dt: nn.Softmax(-1, dtype=dt), lambda t: t.Softmax(-1),
                     (2, 3, 4), "train"),
    "log_softmax": (lambda dt: nn.LogSoftmax(1, dtype=dt), lambda t: t.LogSoftmax(1),
                    (4, 6), "train"),
}


def _make(name, dtype, rng):
    make, _, shape, mode = LAYERS[name]
    layer = make(dtype)
    layer.train(mode == "train")
    for p in layer.parameters():  # away from the initial values
        p.data[...] = rng.standard_normal(p.shape)
    # scaled so that GELU/SiLU see their curved region and maxima are distinct
    return layer, (2 * rng.standard_normal(shape)).astype(dtype)


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
                               rtol=1e-4, atol=1e-4)
    for p32, p64 in zip(layer32.parameters(), layer64.parameters()):
        np.testing.assert_allclose(p32.grad, p64.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_caches_nothing_under_no_grad(name, rng):
    layer, x = _make(name, np.float64, rng)
    with convcore.no_grad():
        y = layer(x)
    assert layer._cache is None
    assert layer.output_shape(x.shape) == y.shape


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_torch(name, rng):
    torch = pytest.importorskip("torch")
    layer, x = _make(name, np.float64, rng)
    tlayer = LAYERS[name][1](torch.nn).double()
    tlayer.train(layer.training)
    tlayer.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    assert list(layer.state_dict()) == list(tlayer.state_dict())
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


# --- conv_transpose2d against a NumPy reference ------------------------------------

def ref_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    """Every input pixel scatters its kernel-weighted value into the output
    (float64 loops over the taps), on a canvas then cropped by the padding."""
    N, C, H, W = x.shape
    _, Kg, R, S = w.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    OH = (H - 1) * sh - 2 * ph + dh * (R - 1) + oph + 1
    OW = (W - 1) * sw - 2 * pw + dw * (S - 1) + opw + 1
    canvas = np.zeros((N, Kg * groups, OH + 2 * ph, OW + 2 * pw))
    Cg = C // groups
    for g in range(groups):
        xg = x[:, g * Cg:(g + 1) * Cg]
        wg = w[g * Cg:(g + 1) * Cg]
        for r in range(R):
            for s in range(S):
                contrib = np.einsum("nchw,ck->nkhw", xg, wg[:, :, r, s])
                rows = slice(r * dh, r * dh + (H - 1) * sh + 1, sh)
                cols = slice(s * dw, s * dw + (W - 1) * sw + 1, sw)
                canvas[:, g * Kg:(g + 1) * Kg, rows, cols] += contrib
    y = canvas[:, :, ph:ph + OH, pw:pw + OW]
    return y if b is None else y + b[:, None, None]


CONFIGS = [  # (C_in, C_out, kernel, stride, padding, output_padding, groups, dilation, H, W)
    (3, 2, (3, 3), (1, 1), (0, 0), (0, 0), 1, (1, 1), 4, 5),
    (4, 6, (3, 3), (2, 2), (1, 1), (1, 1), 2, (1, 1), 5, 4),
    (2, 3, (2, 3), (3, 1), (1, 0), (2, 0), 1, (1, 2), 3, 3),
    (3, 3, (3, 3), (1, 1), (1, 1), (0, 0), 3, (1, 1), 6, 6),   # depthwise
    (2, 4, (1, 1), (2, 2), (0, 0), (1, 0), 2, (1, 1), 1, 1),
]


@pytest.mark.parametrize("algorithm", convcore.conv_algorithms())
@pytest.mark.parametrize("config", CONFIGS)
def test_conv_transpose2d_matches_reference(config, algorithm, rng):
    cin, cout, k, stride, padding, op, groups, dilation, H, W = config
    x = rng.standard_normal((2, cin, H, W))
    w = rng.standard_normal((cin, cout // groups) + k)
    b = rng.standard_normal(cout)
    args = (stride, padding, op, groups, dilation)
    # the adjoint convolution, from the output's channels back to x's
    out_shape = conv_transpose_output_shape(x.shape, w.shape, *args)
    spec = conv_spec(out_shape, w.shape, x.dtype, stride, padding, dilation, groups)
    if algorithm not in supported_algorithms(spec):
        with pytest.raises(ValueError, match="winograd"):
            F.conv_transpose2d(x, w, b, *args, algorithm=algorithm)
        return
    y = F.conv_transpose2d(x, w, b, *args, algorithm=algorithm)
    np.testing.assert_allclose(y, ref_conv_transpose2d(x, w, b, *args), rtol=1e-11, atol=1e-11)
    g = rng.standard_normal(y.shape)
    gx, gw, gb = F.conv_transpose2d_backward(g, x, w, *args, algorithm=algorithm)
    # the transposed convolution is linear in x and in w: its gradients are
    # the reference applied to the upstream gradient's inner products
    np.testing.assert_allclose(gb, g.sum(axis=(0, 2, 3)), rtol=1e-11)
    directional_check(lambda xv, wv: ref_conv_transpose2d(xv, wv, None, *args), [x, w],
                      [gx, gw], g, rng)


def test_conv_transpose_is_the_adjoint_of_conv2d(rng):
    # <conv2d(u, w), x> == <u, conv_transpose2d(x, w)>, with the same geometry
    u = rng.standard_normal((2, 6, 9, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    y = F.conv2d(u, w, stride=2, padding=1, groups=2)
    x = rng.standard_normal(y.shape)
    t = F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=(0, 1), groups=2)
    assert t.shape == u.shape
    assert np.isclose(np.sum(y * x), np.sum(u * t), rtol=1e-12)


def test_conv_transpose_backward_asks_only_what_is_needed(rng):
    x = rng.standard_normal((1, 2, 3, 3))
    w = rng.standard_normal((2, 2, 2, 2))
    g = rng.standard_normal((1, 2, 4, 4))
    gx, gw, gb = F.conv_transpose2d_backward(g, x, w, bias=False, input_grad=False)
    assert gx is None and gb is None and gw.shape == w.shape
    layer = nn.ConvTranspose2d(2, 2, 2, dtype=np.float64, rng=0)
    layer.first_layer = True
    layer(x)
    assert layer.backward(g) is None and layer.weight.grad.shape == w.shape


def test_conv_transpose_empty_batch(rng):
    w = rng.standard_normal((2, 3, 3, 3))
    y = F.conv_transpose2d(np.zeros((0, 2, 4, 4)), w, np.ones(3), stride=2)
    assert y.shape == (0, 3, 9, 9)
    gx, gw, gb = F.conv_transpose2d_backward(np.zeros(y.shape), np.zeros((0, 2, 4, 4)), w,
                                             stride=2)
    assert gx.shape == (0, 2, 4, 4) and not gw.any() and not gb.any()


def test_conv_transpose_output_size_undoes_strided_conv_rounding(rng):
    # a stride-2 convolution maps both 7 and 8 rows to 4; output_size picks
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=np.float64, rng=0)
    up = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, dtype=np.float64, rng=1)
    x = rng.standard_normal((1, 2, 8, 7))
    h = conv(x)
    assert h.shape == (1, 3, 4, 4)
    assert up(h).shape == (1, 2, 7, 7)
    y = up(h, output_size=x.shape)
    assert y.shape == x.shape
    g = rng.standard_normal(y.shape)
    gx, gw, gb = F.conv_transpose2d_backward(g, h, up.weight.data, 2, 1, (1, 0))
    np.testing.assert_allclose(up.backward(g), gx, rtol=1e-13)
    np.testing.assert_allclose(up.weight.grad, gw, rtol=1e-13)
    np.testing.assert_allclose(y, F.conv_transpose2d(h, up.weight.data, up.bias.data, 2, 1,
                                                     (1, 0)), rtol=1e-13)
    with pytest.raises(ValueError, match=r"valid sizes range from \(7, 7\) to \(8, 8\)"):
        up(h, output_size=(9, 7))
    torch = pytest.importorskip("torch")
    tup = torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double()
    tup.load_state_dict({k: torch.from_numpy(v) for k, v in up.state_dict().items()})
    ty = tup(torch.from_numpy(h), output_size=[8, 7])
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)


def test_conv_transpose_default_init_uses_weight_dim1_as_fan_in():
    layer = nn.ConvTranspose2d(16, 8, 3, groups=2, rng=0)
    assert layer.weight.shape == (16, 4, 3, 3)
    bound = 1 / np.sqrt(4 * 9)  # torch: fan_in = weight.size(1) * kH * kW
    w = layer.weight.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert np.abs(layer.bias.data).max() <= bound


# --- dropout2d, adaptive max pooling, softmax --------------------------------------

def test_dropout2d_zeroes_whole_channels_in_training(rng):
    layer = nn.Dropout2d(0.3, dtype=np.float64, rng=7)
    x = rng.standard_normal((40, 30, 3, 2)) + 5   # no zeros of its own
    y = layer(x)
    kept = (y != 0).all(axis=(2, 3))
    assert np.array_equal(kept, (y != 0).any(axis=(2, 3)))   # all or nothing per channel
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], x[kept] / 0.7)
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(layer.backward(g), g * kept[:, :, None, None] / 0.7)
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)


def test_adaptive_max_pool_module_returns_indices(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    y, idx = nn.AdaptiveMaxPool2d(2, return_indices=True, dtype=np.float64)(x)
    y_f, idx_f = F.adaptive_max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y, y_f)
    np.testing.assert_array_equal(idx, idx_f)
    # each maximum is the largest of its window, rows [0, 3) and [3, 6), cols [0, 3), [2, 5)
    np.testing.assert_array_equal(y[:, :, 1, 0], x[:, :, 3:6, 0:3].max(axis=(2, 3)))


def test_softmax_dim_none_follows_torch_legacy_rule(rng):
    x3, x2 = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(nn.Softmax(dtype=np.float64)(x3).sum(axis=0), 1.0)
    np.testing.assert_allclose(nn.Softmax(dtype=np.float64)(x2).sum(axis=1), 1.0)
    np.testing.assert_allclose(np.exp(nn.LogSoftmax(dtype=np.float64)(x2)).sum(axis=1), 1.0)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_reference_values(approximate):
    from math import erf, sqrt, tanh, pi
    xs = np.array([-3.0, -0.5, 0.0, 0.7, 2.5])
    if approximate == "none":
        expect = [v * (1 + erf(v / sqrt(2))) / 2 for v in xs]
    else:
        expect = [v * (1 + tanh(sqrt(2 / pi) * (v + 0.044715 * v ** 3))) / 2 for v in xs]
    np.testing.assert_allclose(F.gelu(xs, approximate), expect, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(F.silu(xs), xs / (1 + np.exp(-xs)), rtol=1e-14)


X4 = np.zeros((1, 2, 3, 3))
W4 = np.zeros((2, 3, 2, 2))

test_bad_arguments = bad_argument_test([
    (F.conv_transpose2d, (X4, np.zeros((3, 3, 2, 2))), {}, ValueError,
     "expects 3 input channels"),
    (F.conv_transpose2d, (X4, W4), {"output_padding": 1}, ValueError,
     "output_padding=(1, 1) must be smaller than stride=(1, 1)"),
    (F.conv_transpose2d, (X4, W4), {"groups": 3}, ValueError, "groups=3 does not divide"),
    (F.conv_transpose2d, (X4, W4), {"padding": 3}, ValueError, "gives an empty output"),
    (F.conv_transpose2d, (X4, W4, np.zeros(2)), {}, ValueError, "bias must have shape (3,)"),
    (F.conv_transpose2d, (X4.astype(np.float32), W4), {}, TypeError, "weight has dtype float64"),
    (F.conv_transpose2d, (X4[0], W4), {}, ValueError, "input must be 4-D"),
    (F.conv_transpose2d_backward, (np.zeros((1, 3, 3, 3)), X4, W4), {}, ValueError,
     "grad_y has shape (1, 3, 3, 3) but the transposed convolution"),
    (lambda: nn.ConvTranspose2d(3, 4, 3, groups=2), ValueError, "groups=2 must divide"),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=2), ValueError,
     "output_padding=(2, 2) must be smaller"),
    (F.gelu, (X4,), {"approximate": "erf"}, ValueError, "approximate must be one of"),
    (lambda: nn.GELU("fast"), ValueError, "approximate must be 'none' or 'tanh'"),
    (F.dropout2d, (np.zeros((2, 3)),), {}, ValueError, "input must be (3, 4)-D"),
    (lambda: nn.Softmax(1.5), TypeError, "dim must be an int or None"),
])
