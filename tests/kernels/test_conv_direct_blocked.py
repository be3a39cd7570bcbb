"""The register-blocked direct kernels (_kernels/direct_block.h through
conv_direct: float32, stride 1, undilated) against the float64 reference,
finite differences and the thread count; their choice by "auto", alone
or per pass (PerPassConv). Shapes probe the blocks' edges: widths around
the vector length, channel counts that leave a short block of output
channels (forward and weight gradient), padding 0 to past the kernel's
extent (backward-data then pads grad_y negatively), 1x1 images, kernels
equal to the input, 1x1, 5x5 and 7x7 kernels (the weight gradient's taps
in chunks of nine), groups."""
import contextlib

import numpy as np
import pytest

import convcore
from convcore import F
from convcore._kernels import conv_direct
from convcore.algorithms import PerPassConv, select_algorithm
from convcore.functional._conv_spec import conv_spec
from ref_conv import conv2d_backward_ref, conv2d_ref

# (N, C, K, H, W, (R, S), padding, groups)
SHAPES = [
    (2, 16, 16, 32, 32, (3, 3), 1, 1),    # ResNet-20's first stage
    (1, 5, 7, 13, 11, (3, 3), 1, 1),      # odd everything, batch 1
    (3, 6, 16, 14, 14, (5, 5), 0, 1),     # LeNet's second layer
    (2, 4, 3, 1, 1, (1, 1), 0, 1),        # 1x1 image and kernel
    (2, 8, 12, 9, 7, (3, 3), 2, 2),       # groups
    (1, 3, 4, 6, 5, (6, 5), 0, 1),        # kernel equal to the input
    (2, 3, 9, 5, 5, (3, 3), 3, 1),        # padding past the kernel: negative in backward-data
    (1, 20, 33, 17, 33, (3, 3), 1, 1),    # 33 filters: short last blocks
    (2, 3, 10, 12, 18, (7, 7), 3, 1),     # 49 taps: six chunks of the weight gradient
    (1, 2, 17, 3, 40, (1, 3), (0, 1), 1),  # a row kernel, width past two vectors
    (2, 4, 8, 3, 16, (3, 3), (0, 1), 1),  # one output row, one whole vector (AVX-512)
]


@contextlib.contextmanager
def _running(name):
    """The blocked kernels' instance `name` switched in (the test skipped
    when this CPU cannot run it), the previous one restored after."""
    try:
        previous = conv_direct.blocked_instance(name)
    except ValueError:
        pytest.skip(f"this CPU has no {name}")
    try:
        yield name
    finally:
        conv_direct.blocked_instance(previous)


@pytest.fixture(params=conv_direct.INSTANCES)
def instance(request):
    """Each instance of the blocked kernels this CPU runs (the baseline
    always), switched in for the test."""
    with _running(request.param):
        yield request.param


def _case(shape, rng):
    N, C, K, H, W, (R, S), padding, groups = shape
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // groups, R, S))
    b = rng.standard_normal(K)
    return x, w, b, dict(padding=padding, groups=groups)


def _rel(a, ref):
    return np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-30)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_blocked_kernels_match_the_reference(shape, instance, rng):
    x, w, b, geom = _case(shape, rng)
    spec = conv_spec(x.shape, w.shape, np.dtype(np.float32), 1, geom["padding"], 1,
                     geom["groups"])
    assert conv_direct.blocked(spec.params, 4)
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    y = F.conv2d(x32, w32, b32, algorithm="direct", **geom)
    ref = conv2d_ref(x, w, b, **geom)
    assert y.dtype == np.float32 and _rel(y, ref) < 2e-6
    gy = rng.standard_normal(ref.shape)
    gx, gw, _ = F.conv2d_backward(gy.astype(np.float32), x32, w32, algorithm="direct",
                                  bias=False, **geom)
    rgx, rgw = conv2d_backward_ref(gy, x, w, **geom)[:2]
    assert _rel(gx, rgx) < 2e-6 and _rel(gw, rgw) < 2e-6


@pytest.mark.parametrize("shape", SHAPES[:3] + SHAPES[4:5], ids=str)
def test_blocked_kernels_give_the_same_bits_on_any_thread_count(shape, instance, rng):
    """Each output is bias + the taps in (c, r, s) order, each weight
    gradient a fixed sum over images, rows and vectors, whichever thread
    runs it."""
    x, w, b, geom = _case(shape, rng)
    x, w, b = (a.astype(np.float32) for a in (x, w, b))
    gy = rng.standard_normal(conv2d_ref(x[:1], w, None, **geom).shape[1:]).astype(np.float32)
    gy = np.broadcast_to(gy, (x.shape[0],) + gy.shape).copy()
    previous = convcore.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            convcore.set_num_threads(threads)
            results.append((F.conv2d(x, w, b, algorithm="direct", **geom),)
                           + F.conv2d_backward(gy, x, w, algorithm="direct", bias=False,
                                               **geom)[:2])
    finally:
        convcore.set_num_threads(previous)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)


def test_blocked_gradients_pass_finite_differences(instance, rng):
    """The loss sum(conv(x, w) * gy) is linear in x and in w, so a central
    difference of step 1 along a random direction is exact but for the
    float32 rounding of the kernels."""
    x, w, b, geom = _case((2, 6, 10, 9, 18, (3, 3), 1, 1), rng)
    x, w = x.astype(np.float32), w.astype(np.float32)
    gy = rng.standard_normal(conv2d_ref(x, w, None, **geom).shape).astype(np.float32)
    gx, gw, _ = F.conv2d_backward(gy, x, w, algorithm="direct", bias=False, **geom)

    def loss(xv, wv):
        return np.sum(F.conv2d(xv, wv, algorithm="direct", **geom) * gy, dtype=np.float64)

    for grad, probe in ((gx, lambda v: (loss(x + v, w) - loss(x - v, w)) / 2),
                        (gw, lambda v: (loss(x, w + v) - loss(x, w - v)) / 2)):
        v = rng.standard_normal(grad.shape).astype(np.float32)
        np.testing.assert_allclose(probe(v), np.sum(grad * v, dtype=np.float64), rtol=1e-3)


def test_non_finite_weights_keep_backward_data_off_the_padding(rng):
    """Backward-data's positions outside grad_y are not data: an Inf weight
    must not turn them into NaN (the blocked kernel would multiply its
    zero padding; such weights take the generic kernel)."""
    x, w, b, geom = _case((1, 4, 8, 6, 7, (3, 3), 1, 1), rng)
    w[2, 1, 0, 0] = np.inf
    gy = rng.standard_normal((1, 8, 6, 7))
    gx = F.conv2d_backward(gy.astype(np.float32), x.astype(np.float32), w.astype(np.float32),
                           algorithm="direct", weight_grad=False, **geom)[0]
    ref = conv2d_backward_ref(gy, x, w, **geom)[0]
    np.testing.assert_array_equal(np.isnan(gx), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(gx), np.isinf(ref))
    assert np.isinf(gx[0, 1]).any() and not np.isnan(gx).all()


def test_blocked_scratch_is_counted():
    """The memory check's scratch covers the padded planes and packed
    weights of the forward and of backward-data, and the weight
    gradient's buffers; float64 and strided layers keep the generic
    kernels (no scratch forward)."""
    spec = conv_spec((8, 16, 32, 32), (16, 16, 3, 3), np.dtype(np.float32), 1, 1, 1, 1)
    forward = conv_direct.scratch_bytes(spec.params, 2, False, 4)
    assert forward >= 2 * 16 * 34 * 34 * 4 + 16 * 16 * 9 * 4
    assert conv_direct.scratch_bytes(spec.params, 2, True, 4) >= forward
    f64 = conv_spec((8, 16, 32, 32), (16, 16, 3, 3), np.dtype(np.float64), 1, 1, 1, 1)
    assert conv_direct.scratch_bytes(f64.params, 2, False, 8) == 0
    strided = conv_spec((8, 16, 32, 32), (16, 16, 3, 3), np.dtype(np.float32), 2, 1, 1, 1)
    assert not conv_direct.blocked(strided.params, 4)
    assert conv_direct.vector_width() in (4, 8, 16)


def test_an_instance_the_cpu_lacks_or_an_unknown_one_is_refused():
    with pytest.raises(ValueError, match="unknown instance"):
        conv_direct.blocked_instance("avx1024")
    current = conv_direct.blocked_instance()
    assert conv_direct.blocked_instance(current) == current
    assert {"baseline": 4, "avx2": 8, "avx512": 16}[current] == conv_direct.vector_width()


def _pick(xs, ws, padding=1, dtype=np.float32, stride=1, groups=1):
    return select_algorithm(conv_spec(xs, ws, np.dtype(dtype), stride, padding, 1, groups))


@pytest.fixture
def avx512():
    """The rule's lane fill depends on the vector width: its cases are
    written for the AVX-512 instance."""
    with _running("avx512"):
        yield


def test_auto_takes_the_direct_kernels_for_small_images_over_few_channels(avx512):
    direct = "direct"
    # forward and backward-data direct, the weight gradient Winograd's
    resnet20 = _pick((128, 16, 32, 32), (16, 16, 3, 3))
    assert isinstance(resnet20, PerPassConv)
    assert [p.name for p in resnet20.parts] == [direct, direct, "winograd"]
    assert resnet20.name == "auto(direct, direct, winograd)"
    assert _pick((16, 32, 16, 16), (32, 32, 3, 3)).parts[0].name == direct
    # from 32 channels, enough work per call for Winograd's transforms
    assert _pick((24, 32, 16, 16), (32, 32, 3, 3)).name == "winograd"
    assert _pick((128, 32, 16, 16), (32, 32, 3, 3)).name == "winograd"
    assert _pick((16, 48, 16, 16), (48, 48, 3, 3)).name == "winograd"
    assert _pick((128, 16, 32, 32), (16, 16, 3, 3)).parts[0].name == direct
    # 16 channels up to 48x48 (40-pixel rows fill 5/6 of three vectors)
    assert _pick((16, 16, 48, 48), (16, 16, 3, 3)).parts[0].name == direct
    assert _pick((32, 16, 40, 40), (16, 16, 3, 3)).parts[0].name == direct
    assert _pick((16, 3, 32, 32), (16, 3, 3, 3)).name == direct     # every pass
    # a first layer on big images: im2col forward, the thin weight gradient direct
    stem = _pick((16, 3, 224, 224), (64, 3, 3, 3))
    assert [p.name for p in stem.parts] == ["im2col", "im2col", direct]
    # not direct: many channels, big images, 1x1 kernels, float64, strides,
    # one input channel (LeNet's first layer), 7-pixel rows, groups
    assert _pick((16, 64, 8, 8), (64, 64, 3, 3)).name == "winograd"
    assert _pick((16, 16, 56, 56), (16, 16, 3, 3)).name == "winograd"
    assert _pick((16, 32, 20, 20), (32, 32, 3, 3)).name == "winograd"  # 20-pixel rows
    assert _pick((16, 48, 12, 12), (48, 48, 3, 3)).name == "winograd"
    assert _pick((16, 32, 56, 56), (32, 32, 3, 3)).name == "winograd"
    assert _pick((16, 16, 32, 32), (16, 16, 1, 1), 0).name == "im2col"
    assert _pick((16, 16, 32, 32), (16, 16, 3, 3), dtype=np.float64).name == "winograd"
    assert _pick((16, 16, 32, 32), (16, 16, 3, 3), stride=2).name == "im2col"
    assert _pick((64, 1, 32, 32), (6, 1, 5, 5), 0).name == "im2col"
    assert _pick((16, 32, 7, 7), (64, 32, 5, 5), 2).name == "im2col"
    assert _pick((16, 16, 32, 32), (16, 8, 3, 3), groups=2).name == "winograd"


def test_auto_leaves_the_baseline_instance_alone():
    """Without AVX2 the blocked kernels are 3-4x slower: auto keeps to
    im2col and Winograd."""
    with _running("baseline"):
        assert _pick((128, 16, 32, 32), (16, 16, 3, 3)).name == "winograd"
        assert _pick((16, 3, 32, 32), (16, 3, 3, 3)).name == "im2col"


def test_per_pass_results_match_a_single_algorithm(avx512, rng):
    """PerPassConv's passes, each from its own algorithm, against im2col
    alone; asked for one gradient, it computes that one only."""
    x = rng.standard_normal((4, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    assert isinstance(_pick(x.shape, w.shape), PerPassConv)
    y = F.conv2d(x, w, b, padding=1)
    np.testing.assert_allclose(y, F.conv2d(x, w, b, padding=1, algorithm="im2col"),
                               rtol=1e-4, atol=1e-4)
    gy = np.cos(y)
    got = F.conv2d_backward(gy, x, w, padding=1)
    want = F.conv2d_backward(gy, x, w, padding=1, algorithm="im2col")
    for a, c in zip(got, want):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-3)
    gx, gw, gb = F.conv2d_backward(gy, x, w, padding=1, weight_grad=False)
    assert gw is None
    np.testing.assert_array_equal(gx, got[0])
    gx, gw, gb = F.conv2d_backward(gy, x, w, padding=1, input_grad=False)
    assert gx is None
    np.testing.assert_array_equal(gw, got[1])
