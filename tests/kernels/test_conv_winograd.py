"""Winograd convolution (convcore._kernels.winograd), both tile sizes:
winograd_f4, F(4x4, 3x3), which "winograd" runs for undilated layers, and
winograd_f2, F(2x2, 3x3), for dilated ones. The kernels called directly
(every pass, each tile, with and without dilation) and through conv2d,
against the float64 reference, at the edges of the tiling: outputs that
are no multiple of the tile (partial tiles, phases of unequal length),
images smaller than the dilation, padding 0..2d and beyond (backward-data
then pads negatively), groups, batch 1, work blocks that cut through
phases and images, and 1 to 3 threads."""
import numpy as np
import pytest

import convcore
from convcore import F
from convcore.algorithms import PerPassConv, WinogradConv, select_algorithm
from convcore.functional._conv_spec import conv_spec
from convcore._kernels import winograd
from convcore._kernels.conv_geometry import ConvGeometry
from convcore._runtime.threads import kernel_threads
from gradcheck import check_conv2d_gradients
from ref_conv import conv2d_backward_ref, conv2d_ref, resolve_padding

TILES = ["winograd_f2", "winograd_f4"]
SIDE = {"winograd_f2": 2, "winograd_f4": 4}
TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-4)}

# (N, C, K, H, W, padding, dilation, groups)
UNDILATED = [
    (1, 1, 1, 1, 1, 1, 1, 1),       # 1x1 image: one tile, mostly padding
    (1, 1, 1, 3, 3, 0, 1, 1),       # kernel == input: a 1x1 output
    (2, 3, 4, 9, 11, 1, 1, 1),      # 9x11 output: partial tiles both ways
    (1, 4, 6, 5, 5, 0, 1, 2),       # groups, 3x3 output
    (3, 8, 8, 16, 16, 1, 1, 1),     # whole tiles
    (2, 6, 4, 13, 7, 2, 1, 2),      # padding 2 (backward-data's padding for pad 0)
    (1, 2, 3, 2, 6, 2, 1, 1),       # rows < 4
    (2, 5, 3, 10, 2, 1, 1, 1),      # a 2-wide image
    (2, 3, 4, 6, 7, 4, 1, 1),       # padding past the kernel's reach: negative for backward-data
]
DILATED = [
    (2, 3, 4, 12, 12, 2, 2, 1),        # OH = 12: a multiple of 2*d
    (2, 3, 4, 11, 13, 2, 2, 1),        # OH, OW odd: phases of unequal length
    (1, 4, 6, 10, 9, 3, 3, 2),         # OH = 10 with d = 3: phases 4, 3, 3; groups
    (3, 2, 3, 9, 14, 4, 4, 1),         # d = 4
    (2, 4, 4, 7, 7, 0, 2, 1),          # no padding: OH = 3 < 2*d
    (1, 3, 2, 5, 8, 1, 2, 1),          # padding below d
    (2, 3, 5, 6, 6, 6, 3, 1),          # padding 2*d: backward-data pads 0
    (2, 2, 3, 5, 7, 5, 2, 1),          # padding past 2*d: backward-data pads -1
    (2, 3, 3, 1, 1, 2, 2, 1),          # 1x1 image
    (1, 2, 4, 1, 1, 4, 4, 2),          # 1x1 image, d = 4, groups
    (2, 3, 2, 2, 2, 2, 2, 1),          # 2x2 image
    (2, 2, 2, 2, 2, 3, 3, 1),          # 2x2 image, d = 3: every tile is half out
    (1, 6, 6, 9, 8, 2, 2, 3),          # groups 3, batch 1
    (2, 8, 8, 6, 10, 2, 2, 8),         # depthwise-like groups
    (2, 3, 4, 10, 11, (2, 3), (2, 3), 1),    # per-axis dilation and padding
    (2, 3, 4, 9, 12, (1, 4), (1, 4), 1),     # dilation along one axis only
    (2, 3, 4, 8, 9, "same", 3, 1),
    (1, 2, 3, 13, 5, "valid", 2, 1),
]
CASES = UNDILATED + DILATED


def _id(case):
    return "N{}C{}K{}_{}x{}_p{}_d{}_g{}".format(*case).replace(" ", "")


def _arrays(case, dtype, seed):
    N, C, K, H, W, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b, dict(padding=padding, dilation=dilation, groups=groups)


def _geom(x, w, gy, geom):
    """The kernels' ConvGeometry for arrays x * w -> gy's shape and the
    reference's keyword arguments (padding may be a per-side pair)."""
    dil = geom["dilation"]
    dil = tuple(dil) if isinstance(dil, tuple) else (dil, dil)
    (pt, _), (pl, _) = resolve_padding(geom["padding"], (3, 3), dil)
    N, C, H, W = x.shape
    return ConvGeometry(N, C, H, W, w.shape[0], 3, 3, gy.shape[2], gy.shape[3],
                        1, 1, pt, pl, dil[0], dil[1], geom["groups"])


def _u(w, tile):
    return WinogradConv._transform(w, tile)


def _flipped(w, groups):
    K, Cg = w.shape[:2]
    return np.ascontiguousarray(w.reshape(groups, K // groups, Cg, 3, 3).transpose(0, 2, 1, 3, 4)
                                .reshape(groups * Cg, K // groups, 3, 3)[:, :, ::-1, ::-1])


def _passes(x, w, b, gy, geom, tile, rows=0, threads=2):
    """The three kernel passes with a chosen block size (0: the plan's) and
    thread count: y, grad_x and grad_w."""
    g = _geom(x, w, gy, geom)
    y = np.full(gy.shape, np.nan, x.dtype)
    assert winograd.forward(x, _u(w, tile), b, y, g, tile, threads, rows)
    gx = np.full(x.shape, np.nan, x.dtype)
    assert winograd.backward_data(gy, _u(_flipped(w, geom["groups"]), tile), gx, g, tile,
                                  threads, rows)
    du = np.full((winograd.points(tile),) + w.shape[:2], np.nan, x.dtype)
    assert winograd.backward_weight(x, gy, du, g, tile, threads, rows)
    gw = np.empty_like(w)
    winograd.untransform_weight_grad(du, gw, tile)
    return y, gx, gw, du


def _scaled(tol, ref):
    return dict(tol, atol=tol["atol"] * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_kernel_passes_match_reference(case, dtype, tile):
    """Both tiles, every pass, with and without dilation (F(4x4) takes
    dilation too, though "winograd" runs F(2x2) there)."""
    x, w, b, geom = _arrays(case, dtype, seed=len(_id(case)))
    y_ref = conv2d_ref(x, w, b, **geom)
    gy = np.random.default_rng(1).standard_normal(y_ref.shape).astype(dtype)
    gx_ref, gw_ref, _ = conv2d_backward_ref(gy, x, w, **geom)
    y, gx, gw, _ = _passes(x, w, b, gy, geom, tile)
    for got, ref, what in ((y, y_ref, "forward"), (gx, gx_ref, "grad_x"), (gw, gw_ref, "grad_w")):
        np.testing.assert_allclose(got, ref, **_scaled(TOL[dtype], ref), err_msg=what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_through_conv2d_all_passes(case, dtype):
    """conv2d / conv2d_backward with algorithm="winograd", each pass on
    its own tile (test_tile_per_pass); each gradient alone takes the same
    path."""
    x, w, b, geom = _arrays(case, dtype, seed=len(_id(case)))
    y_ref = conv2d_ref(x, w, b, **geom)
    gy = np.random.default_rng(1).standard_normal(y_ref.shape).astype(dtype)
    gx_ref, gw_ref, gb_ref = conv2d_backward_ref(gy, x, w, **geom)
    y = F.conv2d(x, w, b, algorithm="winograd", **geom)
    assert y.dtype == dtype and y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, **_scaled(TOL[dtype], y_ref), err_msg="forward")
    gx, gw, gb = F.conv2d_backward(gy, x, w, algorithm="winograd", **geom)
    for got, ref, what in ((gx, gx_ref, "grad_x"), (gw, gw_ref, "grad_w"), (gb, gb_ref, "grad_b")):
        np.testing.assert_allclose(got, ref, **_scaled(TOL[dtype], ref), err_msg=what)
    gx_only, _, _ = F.conv2d_backward(gy, x, w, algorithm="winograd", weight_grad=False, **geom)
    _, gw_only, _ = F.conv2d_backward(gy, x, w, algorithm="winograd", input_grad=False, **geom)
    np.testing.assert_array_equal(gx_only, gx)
    np.testing.assert_array_equal(gw_only, gw)


@pytest.mark.parametrize("case", [CASES[i] for i in (2, 5, 10, 11, 16, 20, 23)], ids=_id)
def test_gradients_match_finite_differences(case, rng):
    x, w, b, geom = _arrays(case, np.float64, seed=3)
    check_conv2d_gradients(x, w, b, geom, "winograd", rng)


def test_float32_error_is_small_at_network_scale(rng):
    """The F(4x4) transforms scale by up to 8: its float32 error grows
    with the channel count, but stays far below the signal (~1e-5 of the
    output's scale, im2col ~5e-7)."""
    x = rng.standard_normal((4, 64, 16, 16)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    y = F.conv2d(x, w, None, padding=1, algorithm="winograd")
    ref = conv2d_ref(x, w, None, padding=1)
    assert np.abs(y - ref).max() / np.abs(ref).max() < 2e-5


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dil,pad,size", [((1, 1), (1, 1), (13, 10)), ((2, 2), (2, 2), (11, 9)),
                                          ((3, 2), (3, 1), (10, 13)), ((4, 1), (0, 1), (13, 6))])
def test_blocks_cut_through_phases_and_images(tile, dil, pad, size, rng):
    """Every block size from one tile row to more than an image's, on 1 to
    3 threads: the results must match the reference, and the weight
    gradient must not depend on the thread count (fixed partial sums)."""
    N, C, K = 3, 4, 5
    H, W = size
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C, 3, 3))
    geom = dict(padding=pad, dilation=dil, groups=1)
    y_ref = conv2d_ref(x, w, **geom)
    gy = rng.standard_normal(y_ref.shape)
    gx_ref, gw_ref, _ = conv2d_backward_ref(gy, x, w, **geom)
    tile_rows, _ = winograd.tile_grid(tile, *y_ref.shape[2:], *dil)
    for rows in range(1, N * tile_rows + 2):
        first_du = None
        for threads in (1, 2, 3):
            y, gx, gw, du = _passes(x, w, np.empty(0), gy, geom, tile, rows, threads)
            np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(gx, gx_ref, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(gw, gw_ref, rtol=1e-10, atol=1e-10)
            if first_du is None:
                first_du = du
            else:
                np.testing.assert_array_equal(du, first_du)


@pytest.mark.parametrize("tile", TILES)
def test_same_result_at_any_thread_count(tile, rng):
    x = rng.standard_normal((3, 5, 13, 10)).astype(np.float32)
    w = rng.standard_normal((4, 5, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((3, 4, 13, 10)).astype(np.float32)
    geom = dict(padding=1, dilation=1, groups=1)
    runs = [_passes(x, w, np.empty(0, np.float32), gy, geom, tile, 0, nt) for nt in (1, 2)]
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("OH,d", [(1, 1), (1, 4), (5, 1), (5, 2), (6, 2), (7, 3), (10, 3), (3, 5),
                                  (9, 1), (13, 2)])
def test_tile_grid_counts_each_phase(tile, OH, d):
    """Tiles along an axis: ceil(phase length / m) summed over the phases."""
    m = SIDE[tile]
    expected = sum(-(-len(range(a, OH, d)) // m) for a in range(d))
    assert winograd.tile_grid(tile, OH, 7, d, 1)[0] == expected
    assert winograd.tile_grid(tile, 7, OH, 1, d)[1] == expected


G = {"winograd_f2": np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5],
                              [0.0, 0.0, 1.0]]),
     "winograd_f4": np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])}


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("Cg", [3, 40, 61])    # 5*61 filters: blocks and a remainder
def test_weight_transform_and_its_adjoint(tile, dtype, Cg, rng):
    """U = G w G^T with the tile's G (Lavin & Gray), and the weight-gradient
    map is its adjoint: <U(w), D> == <w, U^T(D)>."""
    g = G[tile]
    a = g.shape[0]
    w = rng.standard_normal((5, Cg, 3, 3)).astype(dtype)
    u = np.empty((a * a, 5, Cg), dtype)
    winograd.transform_weights(w, u, tile)
    assert winograd.points(tile) == a * a
    expected = np.einsum("ir,kcrs,js->ijkc", g, w.astype(np.float64), g).reshape(a * a, 5, Cg)
    np.testing.assert_allclose(u, expected, **TOL[dtype])
    d = rng.standard_normal((a * a, 5, Cg)).astype(dtype)
    back = np.empty_like(w)
    winograd.untransform_weight_grad(d, back, tile)
    expected = np.einsum("ir,ijkc,js->kcrs", g, d.astype(np.float64).reshape(a, a, 5, Cg), g)
    np.testing.assert_allclose(back, expected, **TOL[dtype])
    np.testing.assert_allclose(np.vdot(u, d), np.vdot(w, back), **TOL[dtype])
    # The filter blocks shared over threads give the same bits.
    u2, back2 = np.empty_like(u), np.empty_like(back)
    winograd.transform_weights(w, u2, tile, 2)
    winograd.untransform_weight_grad(d, back2, tile, 3)
    np.testing.assert_array_equal(u2, u)
    np.testing.assert_array_equal(back2, back)


@pytest.mark.parametrize("tile", TILES)
def test_kernels_report_non_finite_images(tile, rng):
    """The kernels flag an Inf/NaN in the images they read (conv2d then
    recomputes through im2col)."""
    x = rng.standard_normal((2, 3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    geom, u = conv_spec(x.shape, w.shape, x.dtype, 1, 1, 1, 1).params, _u(w, tile)
    y = np.empty((2, 4, 9, 9))
    gy = rng.standard_normal(y.shape)
    du = np.empty((winograd.points(tile), 4, 3))
    assert winograd.forward(x, u, np.empty(0), y, geom, tile, 1)
    for a in (x, gy):
        a[1, 2, 8, 8] = np.inf
        assert not winograd.backward_weight(x, gy, du, geom, tile, 1)
        a[1, 2, 8, 8] = 1.0
    gy[0, 1, 0, 0] = np.nan
    assert not winograd.backward_data(gy, _u(_flipped(w, 1), tile), np.empty_like(x), geom,
                                      tile, 1)
    x[0, 0, 0, 0] = np.nan
    assert not winograd.forward(x, u, np.empty(0), y, geom, tile, 1)


@pytest.mark.parametrize("where", ["x", "grad_y", "weight", "edge"])
@pytest.mark.parametrize("dilation", [1, 2])
def test_non_finite_values_give_im2col_result(where, dilation, rng):
    """The kernels spot an Inf or NaN in the images they transform (x, or
    grad_y for both gradients) and the layer is rerun through im2col, so
    non-finite values reach exactly the outputs whose windows see them."""
    x = rng.random((2, 4, 9, 11))
    w = rng.random((6, 4, 3, 3))
    geom = dict(padding=dilation, dilation=dilation)
    gy = rng.random((2, 6, 9, 11))
    if where == "x":
        x[1, 2, 4, 5] = np.inf
        x[0, 1, 2, 2] = np.nan
    elif where == "grad_y":
        gy[0, 3, 4, 4] = -np.inf
    elif where == "weight":
        w[2, 1, 0, 2] = np.inf
    else:   # the last input column: read only by partly-out tiles (OW = 11)
        x[0, 0, 3, 10] = np.inf
    for dtype in (np.float64, np.float32):
        args = [a.astype(dtype) for a in (x, w)]
        y = F.conv2d(*args, algorithm="winograd", **geom)
        # Inf and NaN where im2col has them (a gradient that does not see
        # the bad array stays Winograd's: equal to rounding).
        np.testing.assert_allclose(y, F.conv2d(*args, algorithm="im2col", **geom), rtol=1e-5)
        grads = F.conv2d_backward(gy.astype(dtype), *args, algorithm="winograd", **geom)
        expected = F.conv2d_backward(gy.astype(dtype), *args, algorithm="im2col", **geom)
        for g, e in zip(grads, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5)
        assert np.isfinite(y).all() == (where == "grad_y")


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
    np.testing.assert_array_equal(F.conv2d(x, tiny, **geom, algorithm="winograd"),
                                  F.conv2d(x, tiny, **geom, algorithm="im2col"))
    gy = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(
        F.conv2d_backward(gy, x, tiny, **geom, algorithm="winograd")[0],
        F.conv2d_backward(gy, x, tiny, **geom, algorithm="im2col")[0])
    assert not np.array_equal(F.conv2d(x, w, **geom, algorithm="winograd"),
                              F.conv2d(x, w, **geom, algorithm="im2col"))


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("groups", [1, 2])
def test_weight_gradient_in_output_blocks(tile, groups, rng):
    """Wide blocks (>= 128 tiles) run the weight gradient's GEMMs in 32 x
    32 output blocks, with partial blocks at the edges (70 and 40 channels);
    narrow ones run them whole. Both give the reference."""
    N, C, K, size = 2, 70, 40, 16
    x = rng.standard_normal((N, C, size, size))
    w = rng.standard_normal((K, C // groups, 3, 3))
    geom = dict(padding=2, dilation=2, groups=groups)
    y = conv2d_ref(x, w, **geom)
    gy = rng.standard_normal(y.shape)
    _, gw_ref, _ = conv2d_backward_ref(gy, x, w, **geom)
    tile_rows, tiles = winograd.tile_grid(tile, size, size, 2, 2)
    for rows in (1, N * tile_rows):
        _, _, gw, _ = _passes(x, w, np.empty(0), gy, geom, tile, rows, 2)
        np.testing.assert_allclose(gw, gw_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape, padding, dilation, tiles", [
    # (N, C, H, W): the tiles of forward, backward-data, weight gradient
    ((2, 8, 16, 16), 1, 1, ("f4", "f4", "f4")),   # 4x4 tiles cover the image
    # pixels the 4x4 tiles span against the 2x2 tiles':
    ((2, 8, 14, 14), 1, 1, ("f4", "f4", "f4")),   # 256 / 196
    ((2, 8, 13, 13), 1, 1, ("f4", "f4", "f4")),   # 256 / 196
    ((2, 8, 7, 7), 1, 1, ("f4", "f4", "f4")),     # 64 / 64
    ((2, 8, 10, 10), 1, 1, ("f2", "f2", "f4")),   # 144 / 100
    ((2, 8, 6, 6), 1, 1, ("f2", "f2", "f4")),     # 64 / 36
    ((2, 8, 10, 16), 1, 1, ("f4", "f4", "f4")),   # 192 / 160
    ((2, 8, 12, 12), 0, 1, ("f2", "f4", "f4")),   # y 10x10, grad_x 12x12
    ((2, 8, 16, 16), 2, 2, ("f2", "f2", "f2")),   # dilated: F(2x2) throughout
])
def test_tile_per_pass(shape, padding, dilation, tiles):
    """Undilated layers run F(4x4) unless its tiles span 1.4 times the
    pixels of F(2x2)'s over the pass's output (y forward, grad_x
    backward-data); then the forward and backward-data run F(2x2). The
    weight gradient keeps F(4x4); dilated layers run F(2x2)."""
    spec = conv_spec(shape, (8, 8, 3, 3), np.dtype(np.float32), 1, padding, dilation, 1, "t")
    got = tuple(WinogradConv._tile(spec, p)[-2:]
                for p in ("forward", "backward_data", "backward_weight"))
    assert got == tiles


def test_mixed_tiles_through_the_weight_cache():
    """A forward on F(2x2) (10x10 output) and a backward-data on F(4x4)
    (12x12 grad_x) keep their transformed weights apart in the cache: the
    second round, from the cache, still gives im2col's results."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    ref_y = F.conv2d(x, w, None, 1, 0, algorithm="im2col")
    ref_gx, ref_gw, _ = F.conv2d_backward(gy, x, w, 1, 0, algorithm="im2col", bias=False)
    spec = conv_spec(x.shape, w.shape, x.dtype, 1, 0, 1, 1, "t")
    W = WinogradConv()
    y, gx, gw = np.empty_like(ref_y), np.empty_like(x), np.empty_like(w)
    for _ in range(2):  # the second round from the cache
        W.forward(x, w, None, y, spec, weight_version=7)
        W.backward(gy, x, w, gx, gw, True, True, spec, weight_version=7)
        for got, ref in ((y, ref_y), (gx, ref_gx), (gw, ref_gw)):
            np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4 * np.abs(ref).max())


def _plan(tile, pass_name, spec):
    return winograd.plan(tile, pass_name, spec.params, kernel_threads(spec.flops()))


def test_scratch_bytes_is_the_plans():
    """WinogradConv.scratch_bytes reports the kernel plan's scratch (the
    larger backward pass for backward), on at most convcore's threads."""
    W = WinogradConv()
    for N, C, K, S, d in ((2, 3, 4, 1, 1), (8, 16, 16, 32, 1), (4, 64, 128, 7, 1),
                          (8, 512, 512, 14, 1), (4, 32, 32, 20, 2)):
        spec = conv_spec((N, C, S, S), (K, C, 3, 3), np.dtype(np.float32), 1, d, d, 1)
        plans = {p: _plan(W._tile(spec, p), p, spec)
                 for p in ("forward", "backward_data", "backward_weight")}
        assert 1 <= plans["forward"]["threads"] <= convcore.get_num_threads()
        assert W.scratch_bytes(spec, False) == 4 * plans["forward"]["scratch_elements"]
        assert W.scratch_bytes(spec, True) == 4 * max(
            plans["backward_data"]["scratch_elements"],
            plans["backward_weight"]["scratch_elements"])


def test_dilated_scratch_is_the_kernels_only():
    """No padded or rearranged copy: at dilation 2 a 32x32 output has as
    many tiles as at dilation 1, so the scratch is the same but for the
    row buffers (two column segments: 4 more elements in each of 8)."""
    dilated = conv_spec((32, 64, 32, 32), (64, 64, 3, 3), np.float32, 1, 2, 2, 1)
    undilated = conv_spec((32, 64, 32, 32), (64, 64, 3, 3), np.float32, 1, 1, 1, 1)
    a, b = _plan("winograd_f2", "forward", dilated), _plan("winograd_f2", "forward", undilated)
    assert (a["rows_per_block"], a["threads"]) == (b["rows_per_block"], b["threads"])
    assert a["scratch_elements"] - b["scratch_elements"] == a["threads"] * 8 * 2


def test_weight_gradient_of_big_weights_takes_long_blocks():
    """Blocks of the weight gradient grow to 256 tiles when dU passes
    4 MiB (512x512 weights), not for small weights."""
    big = conv_spec((8, 512, 14, 14), (512, 512, 3, 3), np.dtype(np.float32), 1, 1, 1, 1)
    assert _plan("winograd_f4", "backward_weight", big)["rows_per_block"] * 4 >= 256
    small = conv_spec((128, 16, 32, 32), (16, 16, 3, 3), np.dtype(np.float32), 1, 1, 1, 1)
    # One thread: the forward's blocks then are the budget's too (with more
    # they are evened out over the threads).
    assert (winograd.plan("winograd_f4", "backward_weight", small.params, 1)["rows_per_block"]
            == winograd.plan("winograd_f4", "forward", small.params, 1)["rows_per_block"])


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_forward_blocks_even_out_the_threads(threads):
    """Forward and backward-data blocks follow the threads: the busiest
    thread of the static schedule gets as few tile rows as any block
    height allows (7 tile rows over 2 threads: blocks of 2, 4 rows and 3,
    not 3+3 and 1), in the tallest blocks that do; the weight gradient's
    blocks (its sums depend on them) do not follow the threads."""
    def busiest(total, rows):
        blocks = -(-total // rows)
        return min(total, -(-blocks // threads) * rows)
    for N, C, S in ((1, 128, 28), (1, 64, 56), (3, 32, 20), (128, 16, 32), (1, 256, 14)):
        spec = conv_spec((N, C, S, S), (C, C, 3, 3), np.dtype(np.float32), 1, 1, 1, 1)
        total = N * -(-S // 4)
        budget = winograd.plan("winograd_f4", "forward", spec.params, 1)["rows_per_block"]
        for pass_name in ("forward", "backward_data"):
            rows = winograd.plan("winograd_f4", pass_name, spec.params, threads)["rows_per_block"]
            best = min(busiest(total, r) for r in range(1, budget + 1))
            assert busiest(total, rows) == best, (N, C, S, pass_name, rows)
            assert all(busiest(total, r) > best for r in range(rows + 1, budget + 1))
        assert (winograd.plan("winograd_f4", "backward_weight", spec.params, threads)
                ["rows_per_block"]
                == winograd.plan("winograd_f4", "backward_weight", spec.params, 1)
                ["rows_per_block"])


def test_unknown_tile_or_pass_is_refused():
    with pytest.raises(ValueError, match="unknown tile"):
        winograd.points("winograd_f6")
    with pytest.raises(ValueError, match="unknown pass"):
        winograd.plan("winograd_f2", "sideways",
                      conv_spec((1, 1, 3, 3), (1, 1, 3, 3), np.float32, 1, 0, 1, 1).params, 1)


def test_auto_picks_winograd_for_dilated_3x3():
    for dilation in (2, 3):
        spec = conv_spec((32, 64, 32, 32), (64, 64, 3, 3), np.float32, 1, dilation, dilation, 1)
        assert select_algorithm(spec).name == "winograd"
    # Too few channels for its GEMMs, dilated or not.
    spec = conv_spec((32, 4, 16, 16), (4, 4, 3, 3), np.float32, 1, 2, 2, 1)
    assert select_algorithm(spec).name == "im2col"
    # Phases under 8 pixels across (dilation 3, 20x20): short tile rows.
    spec = conv_spec((4, 32, 20, 20), (32, 32, 3, 3), np.float32, 1, 3, 3, 1)
    assert select_algorithm(spec).name == "im2col"
    spec = conv_spec((4, 32, 20, 20), (32, 32, 3, 3), np.float32, 1, 2, 2, 1)
    assert select_algorithm(spec).name == "winograd"


def _pick(N, C, S, threads=2):
    """auto's choice between im2col and Winograd: its weight gradient's
    (small images may take the direct kernel for the other passes:
    test_conv_direct_blocked.py)."""
    previous = convcore.set_num_threads(threads)
    try:
        algo = select_algorithm(conv_spec((N, C, S, S), (C, C, 3, 3), np.dtype(np.float32),
                                          1, 1, 1, 1))
        return algo.parts[2].name if isinstance(algo, PerPassConv) else algo.name
    finally:
        convcore.set_num_threads(previous)


def test_auto_needs_pixels_in_the_batch():
    """auto leaves a many-channel layer with few output pixels in the batch
    to im2col (Winograd's per-call weight transform and few tile blocks),
    and takes Winograd once there are enough."""
    assert _pick(8, 128, 14) == "winograd"      # 1568
    assert _pick(128, 16, 64) == "winograd"     # 16 channels at 64x64
    assert _pick(4, 64, 14) == "im2col"         # 784 pixels at 64 channels
    # Under 1024 pixels, from 96 channels: 24 tiles of 4x4 per thread, on
    # images that fill 3/4 of their tiles.
    assert _pick(1, 128, 28) == "winograd"      # 49 tiles
    assert _pick(16, 128, 7) == "winograd"      # 64 tiles, 7x7 fills 0.77
    assert _pick(2, 128, 14) == "im2col"        # 32 tiles
    assert _pick(8, 128, 10) == "im2col"        # 72 tiles, but 10x10 fills 0.69
    # From 256 channels: 24 tiles per thread, on images that fill half.
    assert _pick(1, 256, 28) == "winograd"      # 49 tiles
    assert _pick(8, 512, 7) == "im2col"         # 32 tiles
    assert _pick(16, 512, 7) == "winograd"      # 64 (ResNet-18 layer4, batch 16)
    assert _pick(16, 256, 7) == "winograd"      # ResNet-50 layer3 at 112x112
    assert _pick(4, 256, 14) == "winograd"      # 64
    assert _pick(2, 256, 14) == "im2col"        # 32
    assert _pick(4, 512, 28) == "winograd"
    assert _pick(16, 512, 4) == "im2col"        # 16 tiles
    assert _pick(64, 512, 4) == "winograd"      # 64
    # ... on images the tiles cover at least half: 5x5 in 8x8 of tiles
    # never paid, whatever the batch.
    assert _pick(64, 512, 5) == "im2col"
    assert _pick(8, 256, 10) == "winograd"      # 10x10 in 12x12, 72 tiles


def test_auto_counts_tiles_per_thread():
    """The tile count that pays for Winograd from 256 channels grows with
    the threads that share the tiles."""
    assert _pick(8, 256, 7, threads=1) == "winograd"   # 32 tiles, one thread
    assert _pick(8, 256, 7, threads=2) == "im2col"
    assert _pick(16, 256, 7, threads=2) == "winograd"
    assert _pick(16, 256, 7, threads=4) == "im2col"


def test_auto_chooses_again_when_the_threads_change():
    """conv2d's plan cache keeps auto's choice per thread count: a layer
    run at 1 thread and then at 2 takes the choice for 2."""
    from convcore.functional import conv as conv_module
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 256, 7, 7)).astype(np.float32)
    w = (rng.standard_normal((256, 256, 3, 3)) * 0.05).astype(np.float32)
    previous = convcore.get_num_threads()
    try:
        chosen = {}
        for threads in (1, 2, 1):
            convcore.set_num_threads(threads)
            y = F.conv2d(x, w, padding=1)
            algo = conv_module._plans[conv_module._plan_key(x, w, 1, 1, 1, 1, "auto")].algo
            # the weight gradient's: the choice between im2col and Winograd
            chosen.setdefault(threads, []).append(
                algo.parts[2].name if isinstance(algo, PerPassConv) else algo.name)
            np.testing.assert_allclose(y, F.conv2d(x, w, padding=1, algorithm="im2col"),
                                       rtol=1e-4, atol=1e-4)
        assert chosen == {1: ["winograd", "winograd"], 2: ["im2col"]}
    finally:
        convcore.set_num_threads(previous)


@pytest.mark.parametrize("tile", TILES)
def test_drivers_refuse_arrays_that_do_not_match_the_geometry(tile, rng):
    """The drivers take the layer's ConvGeometry, as every conv driver does,
    and refuse arrays of other shapes instead of running past their ends."""
    x = rng.standard_normal((2, 3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    geom = conv_spec(x.shape, w.shape, x.dtype, 1, 1, 1, 1).params
    u, y = _u(w, tile), np.empty((2, 4, 9, 9))
    with pytest.raises(ValueError, match="do not match the geometry"):
        winograd.forward(x[:1].copy(), u, np.empty(0), y, geom, tile, 1)
    with pytest.raises(ValueError, match="u of shape"):
        winograd.forward(x, u[:, :2].copy(), np.empty(0), y, geom, tile, 1)
    du = np.empty((winograd.points(tile), 4, 2))
    with pytest.raises(ValueError, match="du of shape"):
        winograd.backward_weight(x, y, du, geom, tile, 1)


def test_auto_with_reused_weights_takes_winograd_from_fewer_tiles():
    """With the transformed weights cached (inference through a layer),
    Winograd needs only a tile per 8 channels: the weight transform is not
    paid per call, reading the 36 transformed points per filter is."""
    def pick(N, C, S, reused):
        return select_algorithm(conv_spec((N, C, S, S), (C, C, 3, 3), np.dtype(np.float32),
                                          1, 1, 1, 1), weights_reused=reused).name
    assert pick(2, 256, 14, False) == "im2col"
    assert pick(2, 256, 14, True) == "winograd"      # ResNet-18 layer3 at batch 2
    assert pick(16, 512, 7, True) == "winograd"      # 64 tiles for 512 channels
    assert pick(1, 512, 14, True) == "im2col"        # 16 tiles: too few
    assert pick(1, 256, 14, True) == "im2col"        # 16 tiles (see the rule)
    assert pick(1, 512, 7, True) == "im2col"
    assert pick(1, 128, 28, True) == "winograd"      # 49 tiles for 128 channels
    assert pick(1, 4, 32, True) == "im2col"          # too few channels either way


def test_inference_through_a_layer_uses_the_reused_weights_rule():
    """conv2d asks for the reused-weights choice only with a weight version
    and gradients off; each choice is planned apart, and both agree with
    im2col."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 256, 14, 14)).astype(np.float32)  # 32 tiles
    w = (rng.standard_normal((256, 256, 3, 3)) * 0.05).astype(np.float32)
    ref = F.conv2d(x, w, padding=1, algorithm="im2col")
    train = F.conv2d(x, w, padding=1, weight_version=7)
    with convcore.no_grad():
        infer = F.conv2d(x, w, padding=1, weight_version=7)
        plain = F.conv2d(x, w, padding=1)
    np.testing.assert_array_equal(train, ref)      # im2col chosen: the same bits
    np.testing.assert_array_equal(plain, ref)      # no version: no reuse assumed
    assert not np.array_equal(infer, ref)          # Winograd's rounding, not im2col's
    np.testing.assert_allclose(infer, ref, rtol=0, atol=2e-4 * np.abs(ref).max())


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weight_gradient_of_many_filters(tile, dtype, rng):
    """Past 4 MiB of transformed filters (points x K x C), the weight
    gradient gathers blocks and multiplies point by point instead of
    summing per-chunk copies of dU: the same values, and the same bits on
    1 to 3 threads and with any number of blocks gathered."""
    N, C, K = 3, 272, 256
    x = rng.standard_normal((N, C, 9, 7)).astype(dtype)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    geom = dict(padding=1, dilation=1, groups=1)
    gy = rng.standard_normal((N, K, 9, 7)).astype(dtype)
    _, gw_ref, _ = conv2d_backward_ref(gy.astype(np.float64), x.astype(np.float64),
                                       w.astype(np.float64), **geom)
    g = _geom(x, w, gy, geom)
    small = _geom(x[:, :8], w[:8, :8], gy[:, :8], geom)
    assert winograd.plan(tile, "backward_weight", small, 2)["chunks"] > 0
    first = None
    for threads, rows in ((1, 0), (2, 0), (3, 0), (2, 1), (3, 2)):
        plan = winograd.plan(tile, "backward_weight", g, threads)
        assert plan["chunks"] == 0 and plan["group_blocks"] >= 1
        du = np.full((winograd.points(tile), K, C), np.nan, dtype)
        with convcore._runtime.threads.blas_single():
            assert winograd.backward_weight(x, gy, du, g, tile, threads, rows)
        gw = np.empty_like(w)
        winograd.untransform_weight_grad(du, gw, tile)
        np.testing.assert_allclose(gw, gw_ref, **_scaled(TOL[dtype], gw_ref))
        if rows == 0:
            if first is None:
                first = du
            else:
                np.testing.assert_array_equal(du, first)
