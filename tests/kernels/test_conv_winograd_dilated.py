"""Winograd's in-kernel dilation (conv_winograd tiles each dilation phase
of the output; backward-data runs with padding 2*d - pad, negative when the
forward padded past the dilated kernel's reach) against the float64
reference, at its edges: outputs that are not a multiple of 2*d (partial
tiles, phases of unequal length), images smaller than the dilation,
padding 0..2d and beyond, groups, batch 1, and work blocks that cut
through phases and images."""
import numpy as np
import pytest

from convcore import F
from convcore.algorithms import WinogradConv, select_algorithm
from convcore.functional._conv_spec import conv_spec
from convcore._kernels import conv_winograd
from convcore._runtime.threads import kernel_threads
from gradcheck import directional_check
from ref_conv import conv2d_backward_ref, conv2d_ref

TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-4)}

# (N, C, K, H, W, padding, dilation, groups)
CASES = [
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


def _id(case):
    return "N{}C{}K{}_{}x{}_p{}_d{}_g{}".format(*case).replace(" ", "")


def _arrays(case, dtype, seed):
    N, C, K, H, W, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b, dict(padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_matches_reference(case, dtype):
    x, w, b, geom = _arrays(case, dtype, seed=len(_id(case)))
    y_ref = conv2d_ref(x, w, b, **geom)
    gy = np.random.default_rng(1).standard_normal(y_ref.shape).astype(dtype)
    gx_ref, gw_ref, gb_ref = conv2d_backward_ref(gy, x, w, **geom)
    scale = lambda ref: dict(TOL[dtype], atol=TOL[dtype]["atol"] * max(1.0, np.abs(ref).max()))
    y = F.conv2d(x, w, b, algorithm="winograd", **geom)
    assert y.dtype == dtype and y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, **scale(y_ref), err_msg="forward")
    gx, gw, gb = F.conv2d_backward(gy, x, w, algorithm="winograd", **geom)
    np.testing.assert_allclose(gx, gx_ref, **scale(gx_ref), err_msg="grad_x")
    np.testing.assert_allclose(gw, gw_ref, **scale(gw_ref), err_msg="grad_w")
    np.testing.assert_allclose(gb, gb_ref, **scale(gb_ref), err_msg="grad_b")
    # Each gradient alone takes the same path.
    gx_only, _, _ = F.conv2d_backward(gy, x, w, algorithm="winograd", weight_grad=False, **geom)
    _, gw_only, _ = F.conv2d_backward(gy, x, w, algorithm="winograd", input_grad=False, **geom)
    np.testing.assert_array_equal(gx_only, gx)
    np.testing.assert_array_equal(gw_only, gw)


@pytest.mark.parametrize("case", [CASES[i] for i in (1, 2, 7, 11, 14)], ids=_id)
def test_gradients_match_finite_differences(case, rng):
    x, w, b, geom = _arrays(case, np.float64, seed=3)

    def forward(x, w, b):
        return F.conv2d(x, w, b, algorithm="winograd", **geom)

    upstream = rng.standard_normal(forward(x, w, b).shape)
    grads = F.conv2d_backward(upstream, x, w, algorithm="winograd", **geom)
    directional_check(forward, (x, w, b), grads, upstream, rng)


def _kernel_call(x, u, y, gy, pad, dil, groups, rows, threads):
    """The kernels themselves, with a chosen block size and thread count
    (the algorithm picks both from the layer's size)."""
    b = np.empty(0, x.dtype)
    conv_winograd.forward(x, u, b, y, *pad, *dil, groups, rows, threads)
    du = np.empty(u.shape, x.dtype)
    conv_winograd.backward_weight(x, gy, du, *pad, *dil, groups, rows, threads)
    return y.copy(), du


@pytest.mark.parametrize("dil,pad,size", [((2, 2), (2, 2), (11, 9)), ((3, 2), (3, 1), (10, 13)),
                                          ((4, 1), (0, 1), (13, 6))])
def test_blocks_cut_through_phases_and_images(dil, pad, size, rng):
    """Every block size from one tile row to more than an image's, on 1 to
    3 threads: the forward must match the reference, and the weight
    gradient must not depend on either (fixed partial sums)."""
    N, C, K = 3, 4, 5
    H, W = size
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C, 3, 3))
    geom = dict(padding=pad, dilation=dil)
    y_ref = conv2d_ref(x, w, **geom)
    gy = rng.standard_normal(y_ref.shape)
    _, gw_ref, _ = conv2d_backward_ref(gy, x, w, **geom)
    u = WinogradConv._transform(w, conv_winograd)
    tile_rows, _ = conv_winograd.tile_grid(*y_ref.shape[2:], *dil)
    first_du = None
    for rows in range(1, tile_rows + 3):
        for threads in (1, 2, 3):
            y, du = _kernel_call(x, u, np.empty_like(y_ref), gy, pad, dil, 1, rows, threads)
            np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
            if first_du is None:
                first_du = du
                gw = np.empty_like(w)
                conv_winograd.untransform_weight_grad(du, gw)
                np.testing.assert_allclose(gw, gw_ref, rtol=1e-10, atol=1e-10)
            elif rows == 1:
                np.testing.assert_array_equal(du, first_du)


@pytest.mark.parametrize("OH,d", [(1, 1), (1, 4), (5, 1), (5, 2), (6, 2), (7, 3), (10, 3), (3, 5)])
def test_tile_grid_counts_each_phase(OH, d):
    """Tiles along an axis: ceil(phase length / 2) summed over the phases."""
    phases = [len(range(a, OH, d)) for a in range(d)]
    expected = sum((n + 1) // 2 for n in phases)
    assert conv_winograd.tile_grid(OH, 7, d, 1)[0] == expected
    assert conv_winograd.tile_grid(7, OH, 1, d)[1] == expected


def test_dilated_scratch_is_the_kernels_only():
    """No padded or rearranged copy: at dilation 2 a 32x32 output has as
    many tiles as at dilation 1, so the scratch is the same but for the
    row buffers (two column segments: 4 more elements each)."""
    spec = conv_spec((32, 64, 32, 32), (64, 64, 3, 3), np.float32, 1, 2, 2, 1)
    nt = kernel_threads(spec.flops())
    rows = WinogradConv._rows_per_block(conv_winograd, 64, 64, 32, 32, (1, 1))
    undilated = nt * conv_winograd.scratch_elements(64, 64, 32, 1, rows)   # same tiles
    extra = WinogradConv().scratch_bytes(spec, False) - 4 * undilated
    assert 0 < extra <= nt * 8 * 2 * 4


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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weight_transform_and_its_adjoint(dtype, rng):
    """U = G w G^T as written in Lavin & Gray, and the weight-gradient
    map is its adjoint: <U(w), D> == <w, U^T(D)>."""
    G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    u = np.empty((16, 5, 3), dtype)
    conv_winograd.transform_weights(w, u)
    expected = np.einsum("ir,kcrs,js->ijkc", G, w.astype(np.float64), G).reshape(16, 5, 3)
    np.testing.assert_allclose(u, expected, **TOL[dtype])
    d = rng.standard_normal((16, 5, 3)).astype(dtype)
    back = np.empty_like(w)
    conv_winograd.untransform_weight_grad(d, back)
    expected = np.einsum("ir,ijkc,js->kcrs", G, d.astype(np.float64).reshape(4, 4, 5, 3), G)
    np.testing.assert_allclose(back, expected, **TOL[dtype])
    np.testing.assert_allclose(np.vdot(u, d), np.vdot(w, back), **TOL[dtype])


@pytest.mark.parametrize("where", ["x", "grad_y", "weight", "edge"])
def test_non_finite_values_give_im2col_result(where, rng):
    """The kernels spot an Inf or NaN in the images they transform (x, or
    grad_y for both gradients) and the layer is rerun through im2col, so
    non-finite values reach exactly the outputs whose windows see them."""
    x = rng.random((2, 4, 9, 11))
    w = rng.random((6, 4, 3, 3))
    geom = dict(padding=2, dilation=2)
    gy = rng.random((2, 6, 9, 11))
    if where == "x":
        x[1, 2, 4, 5] = np.inf
        x[0, 1, 2, 2] = np.nan
    elif where == "grad_y":
        gy[0, 3, 4, 4] = -np.inf
    elif where == "weight":
        w[2, 1, 0, 2] = np.inf
    else:   # the last input column: read only by half-out tiles (OW = 11 is odd)
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


@pytest.mark.parametrize("groups", [1, 2])
def test_weight_gradient_in_output_blocks(groups, rng):
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
    _, gw, _ = F.conv2d_backward(gy, x, w, algorithm="winograd", **geom)
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-10, atol=1e-10)
    u = WinogradConv._transform(w, conv_winograd)
    tile_rows, tiles = conv_winograd.tile_grid(size, size, 2, 2)
    for rows in (1, N * tile_rows):           # 8 tiles a block, then 128
        _, du = _kernel_call(x, u, np.empty_like(y), gy, (2, 2), (2, 2), groups, rows, 2)
        gw = np.empty_like(w)
        conv_winograd.untransform_weight_grad(du, gw)
        np.testing.assert_allclose(gw, gw_ref, rtol=1e-10, atol=1e-10)
