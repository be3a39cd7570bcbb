"""The channel-vector direct kernel of small images (_kernels/direct_cvec.h
through conv_direct: float32, groups 1, from 8 images, small
outputs; the forward at any stride and dilation, backward-data at stride
1) against the float64 reference, in every instance this CPU runs, at
several thread counts; and its choice by "auto". Shapes probe the edges:
batches that leave a short last tile of images, filters that leave a short
last block of output channels, outputs whose every tap reads padding,
1x1 images, kernels equal to the input, strides and dilations whose taps
skip whole rows."""
import contextlib

import numpy as np
import pytest

import convcore
from convcore import F
from convcore._kernels import conv_direct
from convcore.algorithms import DirectConv, PerPassConv, select_algorithm
from convcore.functional._conv_spec import conv_spec
from ref_conv import conv2d_backward_ref, conv2d_ref

# (N, C, K, H, W, (R, S), stride, padding, dilation)
SHAPES = [
    (8, 32, 32, 3, 3, (3, 3), 1, 1, 1),        # ResNet layer4 at 96x96, one tile of images
    (13, 37, 33, 4, 4, (3, 3), 1, 1, 1),       # short last tile and block
    (9, 40, 70, 7, 5, (3, 3), 2, 1, 1),        # stride 2, odd sizes
    (8, 33, 35, 1, 1, (3, 3), 1, 1, 1),        # 1x1 image: only the centre tap is real
    (10, 32, 40, 5, 6, (5, 6), 1, 0, 1),       # kernel equal to the input (1x1 output)
    (8, 36, 64, 6, 6, (3, 3), 1, 2, 2),        # dilation 2
    (8, 64, 64, 4, 4, (3, 3), 1, 3, 1),        # padding past the kernel: corners read none
    (11, 64, 72, 8, 8, (2, 2), 1, 0, 1),       # even kernel, 7x7 output
    (8, 64, 64, 12, 12, (3, 3), 3, 1, 1),      # stride 3 on a larger input
    (16, 64, 96, 8, 8, (3, 3), 1, (1, 0), 1),  # rows and columns padded differently
    (8, 64, 70, 10, 10, (3, 3), 1, 1, 1),      # 10x10 from 64 channels
    (9, 128, 130, 13, 14, (3, 3), 1, 1, 1),    # up to 14x14 from 128, a short last tile
]
TOL = 2e-4
TILE = 16  # images per tile at most, of every instance


@contextlib.contextmanager
def _instance(name):
    try:
        previous = conv_direct.blocked_instance(name)
    except ValueError:
        pytest.skip(f"this CPU has no {name}")
    try:
        yield
    finally:
        conv_direct.blocked_instance(previous)


@contextlib.contextmanager
def _threads(n):
    previous = convcore.set_num_threads(n)
    try:
        yield
    finally:
        convcore.set_num_threads(previous)


def _case(shape, rng):
    N, C, K, H, W, (R, S), stride, padding, dilation = shape
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C, R, S)) / np.sqrt(C * R * S)
    b = rng.standard_normal(K)
    spec = conv_spec(x.shape, w.shape, np.dtype(np.float32), stride, padding, dilation, 1)
    gy = rng.standard_normal(spec.out_shape)
    return x, w, b, gy, (stride, padding, dilation), spec


@pytest.mark.parametrize("name", conv_direct.INSTANCES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_data_match_the_reference(shape, name, rng):
    x, w, b, gy, (stride, padding, dilation), spec = _case(shape, rng)
    assert conv_direct.channel_vector(spec.params, 4)
    data = spec.stride == (1, 1)
    assert conv_direct.channel_vector(spec.params, 4, backward_data=True) == data
    args = (x.astype(np.float32), w.astype(np.float32))
    kept = [a.copy() for a in args]
    with _instance(name):
        y = F.conv2d(*args, b.astype(np.float32), stride, padding, dilation,
                     algorithm="direct")
        np.testing.assert_allclose(y, conv2d_ref(x, w, b, stride, padding, dilation),
                                   rtol=TOL, atol=TOL)
        if data:
            gx = F.conv2d_backward(gy.astype(np.float32), *args, stride, padding, dilation,
                                   algorithm="direct", weight_grad=False, bias=False)
            gx = gx[0] if isinstance(gx, tuple) else gx
            np.testing.assert_allclose(
                gx, conv2d_backward_ref(gy, x, w, stride, padding, dilation)[0],
                rtol=TOL, atol=TOL)
    for a, k in zip(args, kept):
        np.testing.assert_array_equal(a, k)  # the caller's arrays untouched


# The narrow instance (AVX-512: one vector of 16 filters, tiles of 16
# images, a tile a task): more than 8 filters, from 12 images, outputs up
# to 10x10.
NARROW_SHAPES = [
    (16, 6, 16, 14, 14, (5, 5), 1, 0, 1),      # LeNet-5's second layer, one tile
    (29, 6, 16, 14, 14, (5, 5), 1, 0, 1),      # a short last tile
    (12, 16, 12, 10, 10, (3, 3), 1, 1, 1),     # a short block of filters, 3/4 of a tile;
                                               # backward-data narrow too (16 -> 12)
    (20, 16, 9, 9, 7, (3, 3), 2, 1, 1),        # stride 2, 9 filters
    (16, 5, 16, 8, 8, (3, 3), 1, 2, 2),        # dilation 2
    (40, 3, 16, 1, 1, (3, 3), 1, 1, 1),        # 1x1 image
]


@pytest.mark.parametrize("shape", NARROW_SHAPES)
def test_narrow_instance_matches_the_reference(shape, avx512, rng):
    x, w, b, gy, (stride, padding, dilation), spec = _case(shape, rng)
    assert conv_direct.channel_vector(spec.params, 4)
    args = (x.astype(np.float32), w.astype(np.float32))
    kept = [a.copy() for a in args]
    # backward-data at stride 1 is the forward of grad_y: K's channels in,
    # C filters (narrow too where C fills more than half a vector)
    data = spec.stride == (1, 1)
    gx_ref = conv2d_backward_ref(gy, x, w, stride, padding, dilation)[0] if data else None
    for n in (1, 2, 3):
        with _threads(n):
            y = F.conv2d(*args, b.astype(np.float32), stride, padding, dilation,
                         algorithm="direct")
            gx = F.conv2d_backward(gy.astype(np.float32), *args, stride, padding, dilation,
                                   algorithm="direct", weight_grad=False,
                                   bias=False)[0] if data else None
        np.testing.assert_allclose(y, conv2d_ref(x, w, b, stride, padding, dilation),
                                   rtol=TOL, atol=TOL)
        if data:
            np.testing.assert_allclose(gx, gx_ref, rtol=TOL, atol=TOL)
        if n == 1:
            first = y
        np.testing.assert_array_equal(y, first)   # whatever the thread count
    for a, k in zip(args, kept):
        np.testing.assert_array_equal(a, k)


def test_narrow_instance_takes_few_filters_on_small_images(avx512):
    def applies(xs, ws, stride=1, padding=0):
        spec = conv_spec(xs, ws, np.dtype(np.float32), stride, padding, 1, 1)
        return conv_direct.channel_vector(spec.params, 4)
    assert applies((12, 6, 14, 14), (16, 6, 5, 5))
    assert not applies((11, 6, 14, 14), (16, 6, 5, 5))         # under 3/4 of a tile
    assert not applies((16, 6, 14, 14), (8, 6, 5, 5))          # half a vector of filters
    assert applies((16, 6, 14, 14), (9, 6, 5, 5))
    assert not applies((16, 6, 14, 14), (17, 6, 5, 5))         # past one vector (and 32)
    assert applies((16, 16, 10, 10), (16, 16, 3, 3), padding=1)    # 10x10 out
    assert not applies((16, 16, 11, 11), (16, 16, 3, 3), padding=1)


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_results_do_not_depend_on_the_thread_count(shape, rng):
    x, w, b, gy, (stride, padding, dilation), spec = _case(shape, rng)
    x, w, b, gy = (a.astype(np.float32) for a in (x, w, b, gy))
    out = {}
    for n in (1, 2, 3):
        with _threads(n):
            y = F.conv2d(x, w, b, stride, padding, dilation, algorithm="direct")
            gx = F.conv2d_backward(gy, x, w, stride, padding, dilation, algorithm="direct",
                                   weight_grad=False, bias=False)
        out[n] = (y, gx[0] if isinstance(gx, tuple) else gx)
    for n in (2, 3):
        for a, b_ in zip(out[1], out[n]):
            np.testing.assert_array_equal(a, b_)


def test_agrees_with_the_other_direct_kernels(rng):
    """The same layer through the other direct kernels (the channel-vector
    kernel switched off) agrees to float32 rounding."""
    x, w, b, gy, (stride, padding, dilation), spec = _case(SHAPES[1], rng)
    x, w, b, gy = (a.astype(np.float32) for a in (x, w, b, gy))
    y = F.conv2d(x, w, b, stride, padding, dilation, algorithm="direct")
    previous = conv_direct.channel_vector_kernel(False)
    try:
        assert not conv_direct.channel_vector(spec.params, 4)
        y_other = F.conv2d(x, w, b, stride, padding, dilation, algorithm="direct")
    finally:
        conv_direct.channel_vector_kernel(previous)
    np.testing.assert_allclose(y, y_other, rtol=1e-5, atol=1e-5)


def test_backward_data_skips_grad_y_padding_with_infinite_weights(rng):
    """Backward-data reads only real positions of grad_y: an infinite weight
    on a tap makes infinities where the reference has them, not NaN from
    infinity times the zero padding."""
    x, w, b, gy, (stride, padding, dilation), spec = _case(SHAPES[0], rng)
    w[0, 0, 0, 0] = np.inf
    expect = conv2d_backward_ref(gy, x, w, stride, padding, dilation)[0]
    gx = F.conv2d_backward(gy.astype(np.float32), x.astype(np.float32), w.astype(np.float32),
                           stride, padding, dilation, algorithm="direct", weight_grad=False,
                           bias=False)
    gx = gx[0] if isinstance(gx, tuple) else gx
    np.testing.assert_array_equal(np.isnan(gx), np.isnan(expect))
    np.testing.assert_array_equal(np.isinf(gx), np.isinf(expect))


def test_small_batches_and_thin_layers_keep_the_other_kernels():
    def applies(xs, ws, stride=1, padding=1, dtype=np.float32, groups=1):
        spec = conv_spec(xs, ws, np.dtype(dtype), stride, padding, 1, groups)
        return conv_direct.channel_vector(spec.params, np.dtype(dtype).itemsize)
    assert applies((8, 32, 4, 4), (32, 32, 3, 3))
    assert not applies((7, 32, 4, 4), (32, 32, 3, 3))           # less than a tile
    assert not applies((8, 16, 4, 4), (32, 16, 3, 3))           # few channels in
    assert not applies((8, 32, 4, 4), (16, 32, 3, 3))           # few out
    assert not applies((8, 32, 7, 7), (32, 32, 3, 3))           # 7x7 needs 64 channels
    assert applies((8, 64, 8, 8), (64, 64, 3, 3))
    assert applies((8, 64, 10, 10), (64, 64, 3, 3))
    assert not applies((8, 64, 11, 11), (64, 64, 3, 3))         # past 10x10
    assert applies((8, 128, 14, 14), (128, 128, 3, 3))
    assert not applies((8, 128, 15, 15), (128, 128, 3, 3))      # past 14x14
    assert applies((8, 64, 16, 16), (64, 64, 3, 3), stride=2)   # 8x8 out, strided
    assert not applies((8, 64, 20, 20), (64, 64, 3, 3), stride=2)   # 10x10 only at stride 1
    assert not applies((8, 64, 4, 4), (64, 32, 3, 3), groups=2)
    assert not applies((8, 64, 4, 4), (64, 64, 3, 3), dtype=np.float64)


def _pick(xs, ws, stride=1, padding=1, weights_reused=False):
    return select_algorithm(conv_spec(xs, ws, np.dtype(np.float32), stride, padding, 1, 1),
                            weights_reused)


def _parts(algo):
    return [p.name for p in algo.parts] if isinstance(algo, PerPassConv) else [algo.name] * 3


@pytest.fixture
def avx512():
    with _instance("avx512"):
        yield


def test_auto_takes_it_for_small_images_over_many_channels(avx512):
    previous = convcore.set_num_threads(2)
    try:
        # ResNet-18 at 96x96, batch 32: layer4 (3x3 images), the strided
        # first convolutions of layers 3 and 4 (forward only: strided
        # backward-data stays with im2col)
        assert _parts(_pick((32, 512, 3, 3), (512, 512, 3, 3))) == ["direct", "direct", "im2col"]
        assert _parts(_pick((32, 256, 6, 6), (512, 256, 3, 3), 2)) == [
            "direct", "im2col", "im2col"]
        # ResNet-50 at 112x112, batch 16: 4x4 and 7x7 images
        assert _parts(_pick((16, 512, 4, 4), (512, 512, 3, 3)))[:2] == ["direct", "direct"]
        assert _parts(_pick((16, 256, 7, 7), (256, 256, 3, 3))) == [
            "direct", "direct", "winograd"]
        # Winograd keeps images its tiles fill, from enough pixels in the batch
        assert _pick((32, 256, 7, 7), (256, 256, 3, 3)).name == "winograd"
        assert _pick((16, 64, 8, 8), (64, 64, 3, 3)).name == "winograd"
        assert _parts(_pick((128, 256, 3, 3), (256, 256, 3, 3)))[:2] == ["direct", "direct"]
        # ... and inference with its transformed weights cached
        assert _pick((16, 256, 7, 7), (256, 256, 3, 3), weights_reused=True).name == "winograd"
        # not: 1x1 kernels, few images or channels, one tile of 2x2 at 512
        assert _pick((16, 512, 7, 7), (2048, 512, 1, 1), 1, 0).name == "im2col"
        assert _pick((4, 512, 3, 3), (512, 512, 3, 3)).name == "im2col"
        assert _pick((32, 32, 4, 4), (32, 32, 3, 3)).name == "im2col"   # 32 channels
        assert _pick((8, 512, 4, 4), (512, 512, 3, 3), 2).name == "im2col"
        # batches that leave most of a tile of 8 images empty
        assert _pick((9, 512, 3, 3), (512, 512, 3, 3)).name == "im2col"
        assert _parts(_pick((12, 512, 3, 3), (512, 512, 3, 3)))[:2] == ["direct", "direct"]
    finally:
        convcore.set_num_threads(previous)


def test_auto_takes_it_on_avx512_only():
    with _instance("avx2"):
        assert _pick((32, 512, 3, 3), (512, 512, 3, 3)).name == "im2col"


def test_auto_with_it_trains_like_im2col(avx512, rng):
    """A layer auto sends through it: forward, input and weight gradients
    equal im2col's to float32 rounding."""
    assert _parts(_pick((16, 64, 4, 4), (64, 64, 3, 3)))[:2] == ["direct", "direct"]
    x = rng.standard_normal((16, 64, 4, 4)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32)
    gy = rng.standard_normal((16, 64, 4, 4)).astype(np.float32)
    for a, b in zip((F.conv2d(x, w, padding=1),) + tuple(F.conv2d_backward(gy, x, w, 1, 1)),
                    (F.conv2d(x, w, padding=1, algorithm="im2col"),)
                    + tuple(F.conv2d_backward(gy, x, w, 1, 1, algorithm="im2col"))):
        if a is None:
            continue
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
def test_scratch_counts_each_pass_kernel(shape, rng):
    """The direct algorithm's scratch covers the copies this kernel makes:
    the packed weights and the image-minor input of the forward, and of
    backward-data's grad_y where it runs it (an unpadded layer's
    backward-data writes a larger image and may run another kernel)."""
    *_, spec = _case(shape, rng)
    N, C, K, H, W, (R, S) = shape[:6]
    algo = DirectConv()
    assert algo.scratch_bytes(spec, False) >= 4 * (K * C * R * S + H * W * C * N)
    if conv_direct.channel_vector(spec.params, 4, backward_data=True):
        assert algo.scratch_bytes(spec, True) >= 4 * (K * C * R * S
                                                      + spec.OH * spec.OW * K * N)
    else:
        assert algo.scratch_bytes(spec, True) > 0   # the weight gradient's sums
