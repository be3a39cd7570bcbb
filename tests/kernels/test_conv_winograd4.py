"""Winograd F(4x4, 3x3) (convcore._kernels.conv_winograd4), the tiling
"winograd" uses for undilated 3x3 stride-1 layers: the kernels called
directly and through conv2d, against the float64 reference, at the edges
of its 4x4 tiling (output sizes 1..9, so every remainder of 4), padding
0..2, groups, batch 1, and 1 vs 2 threads."""
import numpy as np
import pytest

import convcore
from convcore import algorithms
from convcore._kernels import conv_winograd4
from convcore.functional import conv2d, conv2d_backward
from convcore.functional._conv_spec import conv_spec
from ref_conv import conv2d_backward_ref, conv2d_ref

# (N, C, K, H, W, padding, groups)
SHAPES = [
    (1, 1, 1, 1, 1, 1, 1),      # 1x1 image: one tile, mostly padding
    (1, 1, 1, 3, 3, 0, 1),      # kernel == input: a 1x1 output
    (2, 3, 4, 9, 11, 1, 1),     # 9x11 output: partial tiles both ways
    (1, 4, 6, 5, 5, 0, 2),      # groups, 3x3 output
    (3, 8, 8, 16, 16, 1, 1),    # whole tiles
    (2, 6, 4, 13, 7, 2, 2),     # padding 2 (backward-data's padding for pad 0)
    (1, 2, 3, 2, 6, 2, 1),      # rows < 4
    (2, 5, 3, 10, 2, 1, 1),     # a 2-wide image
    (2, 3, 4, 6, 7, 4, 1),      # padding past the kernel's reach: negative for backward-data
]


def _rel(a, ref, scale=None):
    """Largest error over the scale of the terms summed (a result that
    cancels to ~0 is still only as exact as its terms)."""
    scale = np.abs(ref).max() if scale is None else scale
    return np.abs(np.asarray(a, np.float64) - ref).max() / max(scale, 1e-300)


def _u(w):
    return algorithms.WinogradConv._transform(w, conv_winograd4)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_kernel_forward_and_weight_adjoint(shape, dtype, tol, rng):
    N, C, K, H, W, p, g = shape
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // g, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    y = np.full((N, K, H + 2 * p - 2, W + 2 * p - 2), np.nan, dtype)
    assert conv_winograd4.forward(x, _u(w), b, y, p, p, 1, 1, g, 1, 2)
    terms = conv2d_ref(np.abs(x), np.abs(w), np.abs(b), padding=p, groups=g).max()
    assert _rel(y, conv2d_ref(x, w, b, padding=p, groups=g), terms) < tol
    gy = rng.standard_normal(y.shape).astype(dtype)
    du = np.full((36, K, C // g), np.nan, dtype)
    assert conv_winograd4.backward_weight(x, gy, du, p, p, 1, 1, g, 2, 2)
    gw = np.empty(w.shape, dtype)
    conv_winograd4.untransform_weight_grad(du, gw)
    terms = np.abs(conv2d_backward_ref(np.abs(gy), np.abs(x), w, padding=p, groups=g)[1]).max()
    assert _rel(gw, conv2d_backward_ref(gy, x, w, padding=p, groups=g)[1], terms) < tol


@pytest.mark.parametrize("shape", SHAPES)
def test_through_conv2d_all_passes(shape, rng):
    """conv2d / conv2d_backward with algorithm="winograd" run F(4x4) for
    these shapes and match the reference in float64."""
    N, C, K, H, W, p, g = shape
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // g, 3, 3))
    b = rng.standard_normal(K)
    spec = conv_spec(x.shape, w.shape, x.dtype, 1, p, 1, g, "test")
    assert algorithms.WinogradConv._kernel(spec) is conv_winograd4
    y = conv2d(x, w, b, padding=p, groups=g, algorithm="winograd")
    np.testing.assert_allclose(y, conv2d_ref(x, w, b, padding=p, groups=g), rtol=1e-10, atol=1e-10)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = conv2d_backward(gy, x, w, padding=p, groups=g, algorithm="winograd")
    rx, rw, rb = conv2d_backward_ref(gy, x, w, padding=p, groups=g)
    for got, ref in ((gx, rx), (gw, rw), (gb, rb)):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_float32_error_is_small_at_network_scale(rng):
    """The F(4x4) transforms scale by up to 8: its float32 error grows
    with the channel count, but stays far below the signal (measured
    ~1e-5 of the output's scale, im2col ~5e-7)."""
    x = rng.standard_normal((4, 64, 16, 16)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    y = conv2d(x, w, None, padding=1, algorithm="winograd")
    assert _rel(y, conv2d_ref(x, w, None, padding=1)) < 2e-5


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_same_result_at_any_thread_count_and_block(rows, rng):
    x = rng.standard_normal((3, 5, 13, 10)).astype(np.float32)
    w = rng.standard_normal((4, 5, 3, 3)).astype(np.float32)
    u, b = _u(w), np.empty(0, np.float32)
    out = []
    for nt in (1, 2):
        y = np.empty((3, 4, 13, 10), np.float32)
        conv_winograd4.forward(x, u, b, y, 1, 1, 1, 1, 1, rows, nt)
        du = np.empty((36, 4, 5), np.float32)
        conv_winograd4.backward_weight(x, y, du, 1, 1, 1, 1, 1, rows, nt)
        out.append((y, du))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


def test_weight_transform_and_its_adjoint(rng):
    """transform_weights is G w G^T with F(4x4)'s G, and
    untransform_weight_grad its adjoint: <U(w), d> == <w, U^T(d)>."""
    G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
    w = rng.standard_normal((5, 3, 3, 3))
    u = _u(w)
    np.testing.assert_allclose(u, np.einsum("ir,kcrs,js->ijkc", G, w, G).reshape(36, 5, 3),
                               rtol=1e-13, atol=1e-15)
    d = rng.standard_normal((36, 5, 3))
    back = np.empty_like(w)
    conv_winograd4.untransform_weight_grad(d, back)
    assert np.sum(u * d) == pytest.approx(np.sum(w * back), rel=1e-12)


def test_reports_non_finite_images(rng):
    """The kernels flag an Inf/NaN in the images they read (conv2d then
    recomputes through im2col: tests/functional/test_nan.py)."""
    x = rng.standard_normal((2, 3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    y = np.empty((2, 4, 9, 9))
    gy = rng.standard_normal(y.shape)
    du = np.empty((36, 4, 3))
    assert conv_winograd4.forward(x, _u(w), np.empty(0), y, 1, 1, 1, 1, 1, 1, 1)
    for a in (x, gy):
        a[1, 2, 8, 8] = np.inf
        assert not conv_winograd4.backward_weight(x, gy, du, 1, 1, 1, 1, 1, 1, 1)
        a[1, 2, 8, 8] = 1.0
    x[0, 0, 0, 0] = np.nan
    assert not conv_winograd4.forward(x, _u(w), np.empty(0), y, 1, 1, 1, 1, 1, 1, 1)


def test_refuses_dilation():
    x = np.zeros((1, 1, 5, 5))
    with pytest.raises(ValueError, match="dilation 1 only"):
        conv_winograd4.forward(x, np.zeros((36, 1, 1)), np.empty(0), np.zeros((1, 1, 1, 1)),
                               0, 0, 2, 2, 1, 1, 1)


def test_scratch_matches_the_kernels_formula():
    """WinogradConv.scratch_bytes counts what conv_winograd4 allocates:
    per thread (as many as there are blocks, at most) its
    scratch_elements at the planned block size."""
    W = algorithms.WinogradConv
    for N, C, K, S in ((2, 3, 4, 1), (8, 16, 16, 32), (4, 64, 128, 7), (8, 512, 512, 14)):
        spec = conv_spec((N, C, S, S), (K, C, 3, 3), np.dtype(np.float32), 1, 1, 1, 1)
        rows, threads = W._plan(conv_winograd4, C, K, C, (N, K, S, S), spec, False)
        assert 1 <= threads <= convcore.get_num_threads()
        assert W().scratch_bytes(spec, False) == 4 * threads * conv_winograd4.scratch_elements(
            C, K, S, 1, rows)


def test_weight_gradient_of_big_weights_takes_long_blocks():
    """Blocks of the weight gradient grow to WEIGHT_GRAD_TILES tiles when
    dU passes 4 x TILE_BYTES (512x512 weights), not for small weights."""
    W = algorithms.WinogradConv
    big = conv_spec((8, 512, 14, 14), (512, 512, 3, 3), np.dtype(np.float32), 1, 1, 1, 1)
    rows, _ = W._plan(conv_winograd4, 512, 512, 512, (8, 512, 14, 14), big, True)
    assert rows * 4 >= W.WEIGHT_GRAD_TILES
    small = conv_spec((128, 16, 32, 32), (16, 16, 3, 3), np.dtype(np.float32), 1, 1, 1, 1)
    assert (W._plan(conv_winograd4, 16, 16, 16, (128, 16, 32, 32), small, True)
            == W._plan(conv_winograd4, 16, 16, 16, (128, 16, 32, 32), small, False))



@pytest.mark.parametrize("dilation", [1, 2])
def test_denormal_range_weights_take_im2col(dilation, rng):
    """Weights all at the bottom of the float range would turn denormal in
    the transform (G divides by up to 24) and lose their bits: "winograd"
    hands them to im2col, whose result it then returns exactly; weights
    of ordinary size stay on Winograd (their result differs in rounding)."""
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    geom = dict(padding=dilation, dilation=dilation)
    tiny = (w * np.float32(1e-39)).astype(np.float32)
    np.testing.assert_array_equal(conv2d(x, tiny, **geom, algorithm="winograd"),
                                  conv2d(x, tiny, **geom, algorithm="im2col"))
    gy = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(conv2d_backward(gy, x, tiny, **geom, algorithm="winograd")[0],
                                  conv2d_backward(gy, x, tiny, **geom, algorithm="im2col")[0])
    assert not np.array_equal(conv2d(x, w, **geom, algorithm="winograd"),
                              conv2d(x, w, **geom, algorithm="im2col"))


def test_auto_needs_pixels_in_the_batch():
    """auto leaves a many-channel layer with few output pixels in the batch
    to im2col (Winograd's per-call weight transform and few tile blocks),
    and takes Winograd once there are enough."""
    from convcore.algorithms import select_algorithm

    def pick(N, C, S):
        return select_algorithm(conv_spec((N, C, S, S), (C, C, 3, 3), np.dtype(np.float32),
                                          1, 1, 1, 1)).name
    assert pick(8, 512, 7) == "im2col"          # 392 pixels
    assert pick(32, 512, 7) == "im2col"         # 256+ channels: images too small
    assert pick(16, 256, 14) == "im2col"
    assert pick(4, 512, 28) == "winograd"       # 3136 pixels of 28x28 images
    assert pick(16, 128, 7) == "im2col"         # 784 at 128 channels
    assert pick(8, 128, 14) == "winograd"       # 1568
    assert pick(128, 16, 32) == "winograd"      # ResNet-20's first stage
