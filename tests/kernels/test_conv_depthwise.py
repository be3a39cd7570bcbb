"""The depthwise kernels (_kernels/conv_depthwise, reached through
algorithm "direct" and "auto" when each group has one input channel)
against the float64 reference, finite differences and the thread count.
Shapes probe their edges: one-pixel and two-pixel images, widths that are
not a multiple of the vector length, padding 0 (the kernel reads the plane
in place) to 3, strides and dilations, channel multipliers 1 and 2; 3x3
(its own path) and other kernels (a kernel row, up to three taps, a pass)."""
import numpy as np
import pytest

import convcore
from convcore import F
from convcore._runtime import threads as _threads
from convcore._kernels import conv_depthwise, conv_direct
from convcore.algorithms import DirectConv, select_algorithm
from convcore.functional._conv_spec import conv_spec
from gradcheck import directional_check
from ref_conv import conv2d_backward_ref, conv2d_ref

# (N, C, Kg, H, W, geometry), 3x3 kernels
SHAPES = [
    (1, 3, 1, 1, 1, dict(padding=1)),
    (2, 2, 2, 1, 1, dict(padding=2)),
    (1, 4, 1, 2, 2, dict(padding=1)),
    (2, 3, 2, 2, 3, dict(padding=(1, 0))),
    (1, 2, 1, 3, 3, dict(padding=0)),
    (3, 2, 1, 7, 1, dict(padding=1)),
    (2, 3, 1, 5, 9, dict(padding=1)),
    (1, 2, 2, 8, 15, dict(padding=1)),
    (2, 5, 1, 9, 16, dict(padding=0)),
    (1, 3, 2, 6, 17, dict(padding=2)),
    (2, 2, 1, 11, 10, dict(padding=1, stride=2)),
    (1, 3, 2, 9, 13, dict(padding=2, stride=(2, 1))),
    (1, 2, 1, 10, 11, dict(padding=2, dilation=2)),
    (2, 2, 2, 12, 9, dict(padding="same", dilation=(1, 3))),
    (1, 2, 1, 9, 9, dict(padding=1, stride=3, dilation=2)),
    (1, 2, 1, 8, 8, dict(padding=3)),       # padding > kernel extent - 1
]
WIDTHS = list(range(1, 18))
# (N, C, Kg, H, W, (R, S), geometry): the row-pass path
OTHER_KERNELS = [
    (2, 3, 1, 9, 11, (5, 5), dict(padding=2)),
    (1, 2, 2, 8, 8, (1, 1), {}),
    (2, 2, 1, 12, 13, (7, 7), dict(padding=3)),
    (1, 3, 1, 6, 7, (2, 2), dict(padding=1)),
    (1, 2, 2, 9, 10, (1, 5), dict(padding=(0, 2))),
    (2, 2, 1, 11, 9, (4, 3), dict(padding=1, stride=2)),
    (1, 2, 1, 13, 13, (5, 5), dict(padding=4, stride=2, dilation=2)),
    (1, 2, 2, 1, 1, (5, 5), dict(padding=2)),
    (1, 2, 1, 5, 17, (2, 4), dict(padding="same")),
    (2, 2, 1, 7, 9, (3, 5), dict(padding=(1, 2), stride=(1, 3))),
]


def _case(rng, N, C, Kg, H, W, dtype, kernel=(3, 3)):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C * Kg, 1) + kernel).astype(dtype)
    b = rng.standard_normal(C * Kg).astype(dtype)
    return x, w, b


def _tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)


def _check_against_reference(x, w, b, geom, algorithm="direct"):
    C = x.shape[1]
    y = F.conv2d(x, w, b, groups=C, algorithm=algorithm, **geom)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    tol = _tol(x.dtype)
    np.testing.assert_allclose(y, conv2d_ref(x64, w64, b64, groups=C, **geom), **tol)
    gy = np.cos(np.arange(y.size)).reshape(y.shape).astype(x.dtype)
    gx, gw, gb = F.conv2d_backward(gy, x, w, groups=C, algorithm=algorithm,
                                   bias=b is not None, **geom)
    rgx, rgw, rgb = conv2d_backward_ref(gy.astype(np.float64), x64, w64, groups=C, **geom)
    np.testing.assert_allclose(gx, rgx, **tol)
    np.testing.assert_allclose(gw, rgw, **tol)
    if b is not None:
        np.testing.assert_allclose(gb, rgb, **tol)


def test_depthwise_3x3_takes_the_depthwise_kernels():
    spec = conv_spec((2, 8, 5, 5), (16, 1, 3, 3), np.dtype(np.float32), 1, 1, 1, 8, "t")
    assert select_algorithm(spec).name == "direct"
    assert DirectConv._depthwise(spec)
    assert conv_depthwise.supports(1, 5, 5)
    grouped = conv_spec((2, 8, 5, 5), (8, 2, 3, 3), np.dtype(np.float32), 1, 1, 1, 4, "t")
    assert not DirectConv._depthwise(grouped)    # generic direct loops
    # One input channel without groups (a grayscale first layer, LeNet's)
    # is one GEMM over all the filters: im2col.
    gray = conv_spec((64, 1, 32, 32), (6, 1, 5, 5), np.dtype(np.float32), 1, 0, 1, 1, "t")
    assert select_algorithm(gray).name == "im2col"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("N,C,Kg,H,W,geom", SHAPES, ids=str)
def test_matches_reference(N, C, Kg, H, W, geom, with_bias, dtype, rng):
    x, w, b = _case(rng, N, C, Kg, H, W, dtype)
    _check_against_reference(x, w, b if with_bias else None, geom)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N,C,Kg,H,W,kernel,geom", OTHER_KERNELS, ids=str)
def test_other_kernels_match_reference(N, C, Kg, H, W, kernel, geom, dtype, rng):
    x, w, b = _case(rng, N, C, Kg, H, W, dtype, kernel)
    _check_against_reference(x, w, b, geom)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_every_width(width, padding, dtype, rng):
    # Widths 1..17 cover partial vectors and, with padding 0, outputs that
    # end before the input does (the kernel reads the plane in place).
    H = 5
    if width + 2 * padding < 3:
        pytest.skip("empty output")
    x, w, b = _case(rng, 2, 3, 2, H, width, dtype)
    _check_against_reference(x, w, b, dict(padding=padding))
    _check_against_reference(x, w, b, dict(padding=padding, stride=2), algorithm="auto")


@pytest.mark.parametrize("N,C,Kg,H,W,kernel,geom",
                         [s[:5] + ((3, 3),) + s[5:] for s in SHAPES[::3]] + OTHER_KERNELS[::3],
                         ids=str)
def test_gradients_match_finite_differences(N, C, Kg, H, W, kernel, geom, rng):
    x, w, b = _case(rng, N, C, Kg, H, W, np.float64, kernel)

    def forward(x, w, b):
        return F.conv2d(x, w, b, groups=C, algorithm="direct", **geom)

    y = forward(x, w, b)
    upstream = rng.standard_normal(y.shape)
    grads = F.conv2d_backward(upstream, x, w, groups=C, algorithm="direct", **geom)
    directional_check(forward, (x, w, b), grads, upstream, rng)


@pytest.fixture
def restore_threads(monkeypatch):
    monkeypatch.setattr(_threads, "GRAIN", 1)  # small layers use every thread
    previous = convcore.get_num_threads()
    yield
    convcore.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,C,Kg,H,W,kernel,geom",
                         [s[:5] + ((3, 3),) + s[5:] for s in SHAPES[6:]] + OTHER_KERNELS[::2],
                         ids=str)
def test_one_and_two_threads_give_the_same_bits(N, C, Kg, H, W, kernel, geom, dtype,
                                                restore_threads, rng):
    x, w, b = _case(rng, N, C, Kg, H, W, dtype, kernel)
    results = []
    for n in (1, 2):
        convcore.set_num_threads(n)
        y = F.conv2d(x, w, b, groups=C, algorithm="direct", **geom)
        results.append((y,) + F.conv2d_backward(np.cos(y), x, w, groups=C,
                                                algorithm="direct", **geom))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def _same_non_finite(a, ref, dtype):
    np.testing.assert_array_equal(np.isnan(a), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(a), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(a), np.isneginf(ref))
    np.testing.assert_allclose(a, ref, **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,pad", [((3, 3), 1), ((5, 5), 2)])
def test_non_finite_weights(kernel, pad, dtype, rng):
    """The forward multiplies the padding like data (an Inf weight meeting
    it gives NaN), as the reference and PyTorch do; backward-data's
    padded positions are not data, so planes with a non-finite weight run
    the generic kernel, which skips them (the reference and PyTorch too)."""
    x, w, b = _case(rng, 2, 4, 2, 6, 7, dtype, kernel)
    w[1, 0, 0, 0] = np.inf      # output channel 1, input channel 0
    w[6, 0, 2, 1] = np.nan      # output channel 6, input channel 3
    geom = dict(padding=pad, groups=4)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y = F.conv2d(x, w, b, algorithm="direct", **geom)
    _same_non_finite(y, conv2d_ref(x64, w64, b.astype(np.float64), **geom), dtype)
    assert np.isnan(y[:, 1, 0]).all() and np.isinf(y[:, 1, -1, -1]).all()
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = F.conv2d_backward(gy, x, w, algorithm="direct", weight_grad=False, **geom)[0]
    _same_non_finite(gx, conv2d_backward_ref(gy.astype(np.float64), x64, w64, **geom)[0], dtype)
    generic = np.empty_like(x)
    spec = conv_spec(x.shape, w.shape, dtype, 1, pad, 1, 4)
    conv_direct.backward_data(gy, w, generic, spec.params, 2)
    np.testing.assert_array_equal(gx[:, [0, 3]], generic[:, [0, 3]])
