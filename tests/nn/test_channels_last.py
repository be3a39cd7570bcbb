"""Channels-last (NHWC) layers and ops: every layer with
data_format="channels_last" gives the channels-first layer's results in
the other layout, forward and backward, both dtypes, odd sizes; against
the float64 references and finite differences; state dicts move between
the layouts (Flatten keeps Linear's weights valid); the errors name the
layout when an input is in the other one."""
import numpy as np
import pytest

import convcore
import ref_conv
import ref_pool
from convcore import F, nn
from convcore.utils.layout import (
    check_data_format, from_channels_first, looks_channels_last, to_channels_first)
from nn_helpers import check_module_gradients
from nn_helpers import one_kernel_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

DTYPES = [np.float32, np.float64]


def nhwc(a):
    return a.transpose(0, 2, 3, 1)


def nchw(a):
    return a.transpose(0, 3, 1, 2)


# id -> (factory(dtype, data_format), NCHW input shape, train mode)
LAYERS = {
    "conv": (lambda dt, f: nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype=dt, rng=1,
                                     data_format=f), (2, 3, 7, 6), True),
    "conv_grouped_dilated": (
        lambda dt, f: nn.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=2, groups=2,
                                bias=False, dtype=dt, rng=2, data_format=f),
        (2, 4, 5, 6), True),
    "conv_1x1_batch1": (lambda dt, f: nn.Conv2d(3, 5, 1, dtype=dt, rng=3, data_format=f),
                        (1, 3, 1, 1), True),
    "conv_same": (lambda dt, f: nn.Conv2d(1, 2, (2, 3), padding="same", dtype=dt, rng=4,
                                          data_format=f), (1, 1, 5, 4), True),
    "maxpool": (lambda dt, f: nn.MaxPool2d(3, stride=2, padding=1, dtype=dt, data_format=f),
                (2, 3, 7, 5), True),
    "maxpool_ceil_dilated": (
        lambda dt, f: nn.MaxPool2d(2, stride=2, dilation=2, ceil_mode=True, dtype=dt,
                                   data_format=f), (1, 2, 7, 6), True),
    "avgpool": (lambda dt, f: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                           count_include_pad=False, dtype=dt, data_format=f),
                (2, 3, 7, 5), True),
    "adaptive_avg": (lambda dt, f: nn.AdaptiveAvgPool2d((3, None), dtype=dt, data_format=f),
                     (2, 3, 7, 5), True),
    "adaptive_avg_global": (lambda dt, f: nn.AdaptiveAvgPool2d(1, dtype=dt, data_format=f),
                            (1, 3, 1, 1), True),
    "bn_train": (lambda dt, f: nn.BatchNorm2d(3, dtype=dt, data_format=f), (2, 3, 5, 3), True),
    "bn_eval": (lambda dt, f: nn.BatchNorm2d(3, dtype=dt, data_format=f), (1, 3, 1, 1), False),
    "flatten": (lambda dt, f: nn.Flatten(dtype=dt, data_format=f), (2, 3, 4, 5), True),
}


def _pair(name, dt, rng):
    """(channels-first layer, channels-last layer with its state dict)."""
    factory, _, train = LAYERS[name]
    first, last = factory(dt, "channels_first"), factory(dt, "channels_last")
    state = first.state_dict()
    for key, value in state.items():   # non-trivial parameters and statistics
        if value.dtype.kind == "f":
            value[...] = rng.uniform(0.5, 1.5, value.shape)
    first.load_state_dict(state)
    last.load_state_dict(state)
    for m in (first, last):
        m.train(train)
    return first, last


def _random(shape, dt, rng):
    return rng.standard_normal(shape).astype(dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("name", LAYERS)
def test_layer_channels_last_equals_channels_first(name, dt, rng):
    first, last = _pair(name, dt, rng)
    x = _random(LAYERS[name][1], dt, rng)
    x_last = np.ascontiguousarray(nhwc(x))
    kept = x_last.copy()
    y = first(x)
    y_last = last(x_last)
    assert y_last.dtype == dt
    expected = y if name == "flatten" else nhwc(y)   # Flatten: the same features
    np.testing.assert_array_equal(y_last, expected)
    g = _random(y.shape, dt, rng)
    gx = first.backward(g)
    gx_last = last.backward(g if name == "flatten" else np.ascontiguousarray(nhwc(g)))
    np.testing.assert_array_equal(gx_last, nhwc(gx))
    for (k, p), (k2, p2) in zip(first.named_parameters(), last.named_parameters()):
        assert k == k2 and p.grad is not None
        np.testing.assert_array_equal(p2.grad, p.grad)
    for key, value in first.state_dict().items():   # running statistics too
        np.testing.assert_array_equal(last.state_dict()[key], value)
    np.testing.assert_array_equal(x_last, kept)      # the caller's input untouched


@pytest.mark.parametrize("name", LAYERS)
def test_layer_channels_last_finite_differences(name, rng):
    _, last = _pair(name, np.float64, rng)
    x = rng.standard_normal(LAYERS[name][1])
    check_module_gradients(last, np.ascontiguousarray(nhwc(x)), rng)


def test_conv_channels_last_against_reference(rng):
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2,
                     dtype=np.float64, rng=5, data_format="channels_last")
    x = rng.standard_normal((2, 5, 7, 4))        # NHWC
    y = conv(x)
    w, b = conv.weight.data, conv.bias.data
    geometry = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    ref = ref_conv.conv2d_ref(nchw(x), w, b, **geometry)
    np.testing.assert_allclose(y, nhwc(ref), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    gx = conv.backward(gy)
    rgx, rgw, rgb = ref_conv.conv2d_backward_ref(nchw(gy), nchw(x), w, **geometry)
    np.testing.assert_allclose(gx, nhwc(rgx), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, rgw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, rgb, rtol=1e-12, atol=1e-12)


def test_pooling_channels_last_against_reference(rng):
    x = rng.standard_normal((2, 6, 5, 3))        # NHWC
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True, data_format="channels_last")
    ry, ridx = ref_pool.max_pool2d(nchw(x), 3, 2, 1)
    np.testing.assert_array_equal(y, nhwc(ry))
    np.testing.assert_array_equal(idx, nhwc(ridx))
    gy = rng.standard_normal(y.shape)
    gx = F.max_pool2d_backward(gy, idx, x.shape, data_format="NHWC")
    np.testing.assert_array_equal(gx, nhwc(ref_pool.max_pool2d_backward(
        nchw(gy), ridx, nchw(x).shape)))
    a = F.avg_pool2d(x, 2, 1, 1, data_format="channels_last")
    np.testing.assert_allclose(a, nhwc(ref_pool.avg_pool2d(nchw(x), 2, 1, 1)), rtol=1e-12)
    ga = F.avg_pool2d_backward(rng.standard_normal(a.shape), x.shape, 2, 1, 1,
                               data_format="channels_last")
    assert ga.shape == x.shape
    ad = F.adaptive_avg_pool2d(x, (4, 2), data_format="channels_last")
    np.testing.assert_allclose(ad, nhwc(ref_pool.adaptive_avg_pool2d(nchw(x), (4, 2))),
                               rtol=1e-12)
    am, am_idx = F.adaptive_max_pool2d(x, 2, return_indices=True, data_format="channels_last")
    rm, rm_idx = ref_pool.adaptive_max_pool2d(nchw(x), 2)
    np.testing.assert_array_equal(am, nhwc(rm))
    gam = F.adaptive_max_pool2d_backward(np.ones_like(am), am_idx, x.shape,
                                         data_format="channels_last")
    np.testing.assert_array_equal(gam, nhwc(ref_pool.max_pool2d_backward(
        np.ones_like(rm), rm_idx, nchw(x).shape)))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_functional_channels_last(training, rng):
    x = rng.standard_normal((3, 4, 5, 2))        # NHWC, 2 channels
    mean, var = rng.standard_normal(2), rng.uniform(0.5, 2, 2)
    w, b = rng.standard_normal(2), rng.standard_normal(2)
    m_last, v_last = mean.copy(), var.copy()
    y, bm, bi = F.batch_norm(x, m_last, v_last, w, b, training=training, return_stats=True,
                             data_format="channels_last")
    # the float64 definition, over N, H and W
    mu = x.mean(axis=(0, 1, 2)) if training else mean
    sigma2 = x.var(axis=(0, 1, 2)) if training else var
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(sigma2 + 1e-5) * w + b, rtol=1e-10)
    if training:   # running statistics updated as channels, not as widths
        np.testing.assert_allclose(m_last, 0.9 * mean + 0.1 * mu, rtol=1e-12)
    gy = rng.standard_normal(x.shape)
    gx, gw, gb = F.batch_norm_backward(gy, x, bm, bi, w, training=training,
                                       data_format="channels_last")
    rgx, rgw, rgb = F.batch_norm_backward(np.ascontiguousarray(nchw(gy)),
                                          np.ascontiguousarray(nchw(x)), bm, bi, w,
                                          training=training)
    np.testing.assert_array_equal(gx, nhwc(rgx))
    np.testing.assert_array_equal(gw, rgw)
    np.testing.assert_array_equal(gb, rgb)
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 1, 2)), rtol=1e-12)


def test_conv_functional_channels_last_backward(rng):
    x = rng.standard_normal((1, 5, 4, 3))
    w = rng.standard_normal((2, 3, 3, 3))
    y = F.conv2d(x, w, None, 1, 1, data_format="channels_last")
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = F.conv2d_backward(gy, x, w, 1, 1, data_format="channels_last")
    rgx, rgw, rgb = ref_conv.conv2d_backward_ref(nchw(gy), nchw(x), w, padding=1)
    np.testing.assert_allclose(gx, nhwc(rgx), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, rgw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, rgb, rtol=1e-12, atol=1e-12)


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=2, dtype=np.float64, rng=6,
                     data_format="channels_last")
    tconv = torch.nn.Conv2d(3, 4, 3, padding=1, stride=2).double()
    tconv.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in conv.state_dict().items()})
    x = rng.standard_normal((2, 7, 6, 3))
    tx = torch.from_numpy(np.ascontiguousarray(nchw(x))).requires_grad_()
    ty = torch.nn.functional.max_pool2d(tconv(tx), 2, ceil_mode=True)
    pool = nn.MaxPool2d(2, ceil_mode=True, dtype=np.float64, data_format="channels_last")
    y = pool(conv(x))
    np.testing.assert_allclose(y, nhwc(ty.detach().numpy()), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(np.ascontiguousarray(nchw(gy))))
    gx = conv.backward(pool.backward(gy))
    np.testing.assert_allclose(gx, nhwc(tx.grad.numpy()), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, tconv.weight.grad.numpy(), rtol=1e-12)


def _net(data_format, dt=np.float32):
    f = dict(data_format=data_format)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, dtype=dt, rng=7, **f), nn.BatchNorm2d(4, dtype=dt, **f),
        nn.ReLU(), nn.MaxPool2d(2, dtype=dt, **f),
        nn.Conv2d(4, 5, 3, dtype=dt, rng=8, **f), nn.ReLU(),
        nn.AdaptiveAvgPool2d((2, 3), dtype=dt, **f), nn.Flatten(dtype=dt, **f),
        nn.Linear(30, 3, dtype=dt, rng=9))


@pytest.mark.parametrize("fusion", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_state_dict_moves_between_layouts(train, fusion, rng):
    """A channels-first network's state dict loads into the channels-last
    one and gives the same logits and gradients (the channels-first one
    may run fused kernels: equal up to rounding)."""
    previous = nn.set_fusion(fusion)
    try:
        first, last = _net("channels_first"), _net("NHWC")
        assert list(first.state_dict()) == list(last.state_dict())
        last.load_state_dict(first.state_dict())
        first.train(train)
        last.train(train)
        x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
        y, y_last = first(x), last(np.ascontiguousarray(nhwc(x)))
        np.testing.assert_allclose(y_last, y, rtol=1e-5, atol=1e-6)
        g = rng.standard_normal(y.shape).astype(np.float32)
        gx, gx_last = first.backward(g), last.backward(g)
        np.testing.assert_allclose(gx_last, nhwc(gx), rtol=1e-4, atol=1e-5)
        for p, q in zip(first.parameters(), last.parameters()):
            np.testing.assert_allclose(q.grad, p.grad, rtol=1e-4, atol=1e-5)
        for key, value in first.state_dict().items():
            np.testing.assert_allclose(last.state_dict()[key], value, rtol=1e-6)
    finally:
        nn.set_fusion(previous)


def test_flatten_channels_last_order():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)   # NCHW
    flat = nn.Flatten(data_format="channels_last")(np.ascontiguousarray(nhwc(x)))
    # the channels-first order: channel 0's plane first, then channel 1's
    np.testing.assert_array_equal(flat, x.reshape(2, 12))
    np.testing.assert_array_equal(flat[0, :4], [0, 1, 2, 3])
    assert nn.Flatten(data_format="channels_last").output_shape((2, 2, 2, 3)) == (2, 12)
    partial = nn.Flatten(start_dim=2, data_format="channels_last")
    np.testing.assert_array_equal(partial(np.ascontiguousarray(nhwc(x))), x.reshape(2, 3, 4))


def test_output_shapes_and_summary():
    net = _net("channels_last")
    assert nn.Conv2d(3, 4, 3, stride=2, data_format="channels_last").output_shape(
        (1, 9, 7, 3)) == (1, 4, 3, 4)
    assert nn.MaxPool2d(2, data_format="channels_last").output_shape((1, 9, 7, 3)) == (1, 4, 3, 3)
    assert nn.AvgPool2d(2, data_format="channels_last").output_shape((1, 9, 7, 3)) == (1, 4, 3, 3)
    assert nn.AdaptiveAvgPool2d((2, None), data_format="channels_last").output_shape(
        (1, 9, 7, 3)) == (1, 2, 7, 3)
    assert "data_format='channels_last'" in repr(net[0])
    assert "data_format" not in repr(_net("channels_first")[0])
    table = net.summary((9, 11, 3))
    assert [row for row in str(table).splitlines() if "MaxPool2d" in row][0].split()[2] \
        == "4x5x4"
    assert table.total_macs == _net("channels_first").summary((3, 9, 11)).total_macs


def test_data_format_names():
    assert check_data_format("NHWC") == check_data_format("channels_last") == "channels_last"
    assert check_data_format("nchw") == "channels_first"
    for bad in ("NWHC", None, 1, "channels-last"):
        with pytest.raises(ValueError, match="data_format must be 'channels_first'"):
            nn.Conv2d(3, 4, 3, data_format=bad)
    with pytest.raises(ValueError, match="max_pool2d: data_format"):
        F.max_pool2d(np.zeros((1, 2, 2, 1), np.float32), 2, data_format="HWC")
    a = np.zeros((2, 5, 4, 3))
    assert to_channels_first(a, "channels_last").shape == (2, 3, 5, 4)
    assert from_channels_first(to_channels_first(a, "channels_last"), "channels_last").shape \
        == a.shape
    assert looks_channels_last((8, 32, 32, 3)) and not looks_channels_last((8, 3, 32, 32))
    assert not looks_channels_last((8, 3, 32, 3)) and not looks_channels_last((8, 2, 3, 4))


NHWC_HINT = ("this looks like channels-last (NHWC); pass data_format='channels_last' "
             "or transpose with x.transpose(0, 3, 1, 2)")
NCHW_HINT = ("this looks like channels-first (NCHW); pass data_format='channels_first' "
             "or transpose with x.transpose(0, 2, 3, 1)")


def test_errors_name_the_layout():
    x_last = np.zeros((8, 32, 32, 3), np.float32)
    x_first = np.zeros((8, 3, 32, 32), np.float32)
    with pytest.raises(ValueError) as info:
        nn.Conv2d(3, 4, 3)(x_last)
    assert str(info.value) == ("Conv2d: expected input with 3 channels in dim 1 (NCHW), got "
                               "shape (8, 32, 32, 3): " + NHWC_HINT)
    with pytest.raises(ValueError) as info:
        nn.Conv2d(3, 4, 3, data_format="channels_last")(x_first)
    assert str(info.value) == ("Conv2d: expected input with 3 channels in the last dim (NHWC), "
                               "got shape (8, 3, 32, 32): " + NCHW_HINT)
    with pytest.raises(ValueError, match="BatchNorm2d: expected input with 3 channels") as info:
        nn.BatchNorm2d(3)(x_last)
    assert NHWC_HINT in str(info.value)
    with pytest.raises(ValueError) as info:
        nn.BatchNorm2d(3, data_format="channels_last")(x_first)
    assert NCHW_HINT in str(info.value)
    w = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv2d: .*input shape \(8, 32, 32, 3\)") as info:
        F.conv2d(x_last, w)
    assert NHWC_HINT in str(info.value)
    with pytest.raises(ValueError) as info:
        F.conv2d(x_first, w, data_format="channels_last")
    assert "input shape (8, 3, 32, 32)" in str(info.value) and NCHW_HINT in str(info.value)
    with pytest.raises(ValueError, match="batch_norm: expected input with 3 channels") as info:
        F.batch_norm(x_last, np.zeros(3, np.float32), np.ones(3, np.float32))
    assert NHWC_HINT in str(info.value)
    # a plain mismatch (neither layout fits) keeps the op's own message
    with pytest.raises(ValueError) as info:
        nn.Conv2d(3, 4, 3)(np.zeros((8, 5, 32, 32), np.float32))
    assert "looks like" not in str(info.value) and "expects 3 input channels" in str(info.value)
    # a (N, C, L) batch-norm input: the hint moves the last axis to dim 1
    with pytest.raises(ValueError, match=r"np\.moveaxis\(x, -1, 1\)"):
        nn.BatchNorm1d(3)(np.zeros((4, 7, 3), np.float32))


def test_channels_last_batch_norm_1d(rng):
    x = rng.standard_normal((4, 7, 3))           # (N, L, C)
    bn_last = nn.BatchNorm1d(3, dtype=np.float64, data_format="channels_last")
    bn = nn.BatchNorm1d(3, dtype=np.float64)
    np.testing.assert_array_equal(bn_last(x), bn(np.ascontiguousarray(x.transpose(0, 2, 1)))
                                  .transpose(0, 2, 1))


def test_sync_batchnorm_refuses_channels_last():
    bn = nn.SyncBatchNorm(3, data_format="channels_last")
    with pytest.raises(ValueError, match="SyncBatchNorm: data_format='channels_last'"):
        bn(np.zeros((2, 4, 4, 3), np.float32))


def test_channels_last_no_grad_and_non_contiguous(rng):
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=10, data_format="channels_last")
    x = rng.standard_normal((2, 6, 10, 2)).astype(np.float32)
    strided = x[:, :, ::2]                       # a non-contiguous NHWC view
    y = conv(strided)
    with convcore.no_grad():
        y2 = conv(np.ascontiguousarray(strided))
    np.testing.assert_array_equal(y, y2)
    assert y.shape == (2, 6, 5, 3)


def _block(data_format, dt=np.float64):
    f = dict(data_format=data_format, dtype=dt)
    body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, rng=11, **f), nn.BatchNorm2d(3, **f),
                         nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1, rng=12, **f),
                         nn.BatchNorm2d(3, **f))
    axis = 1 if data_format == "channels_first" else -1
    return nn.Sequential(nn.Residual(body), nn.ReLU(),
                         nn.Concat(nn.Conv2d(3, 2, 1, rng=13, **f), nn.Identity(), axis=axis))


@pytest.mark.parametrize("train", [True, False])
def test_residual_and_concat_blocks_channels_last(train, rng):
    """The containers' fused paths (residual sum + ReLU with the body's
    last batch norm) run only for channels-first layers; a channels-last
    block gives the same results through the layers one by one."""
    first, last = _block("channels_first"), _block("channels_last")
    last.load_state_dict(first.state_dict())
    first.train(train)
    last.train(train)
    x = rng.standard_normal((2, 3, 5, 4))
    y = first(x)
    np.testing.assert_allclose(last(np.ascontiguousarray(nhwc(x))), nhwc(y), rtol=1e-10,
                               atol=1e-12)
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(last.backward(np.ascontiguousarray(nhwc(g))),
                               nhwc(first.backward(g)), rtol=1e-9, atol=1e-11)
    for p, q in zip(first.parameters(), last.parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-9, atol=1e-11)
