"""Strided convolutions through "winograd": the 3x3 stride-1 convolution
over the input's stride phases (convcore.algorithms.phases), against the
NumPy reference, by finite differences, and auto's choice of it."""
import numpy as np
import pytest

from convcore import F
from convcore.algorithms import WinogradConv, phases, select_algorithm
from convcore.functional._conv_spec import conv_spec
from gradcheck import check_conv2d_gradients
from ref_conv import conv2d_backward_ref, conv2d_ref

TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-4)}

# (N, C, K, H, W, (R, S), stride, padding, groups)
STRIDED = [
    (2, 3, 8, 35, 35, (11, 11), 4, 0, 1),     # AlexNet's conv1, small: 7x7 output
    (1, 3, 6, 30, 27, (11, 11), 4, 2, 1),     # padding 2 (torchvision's), odd sizes
    (2, 2, 4, 11, 11, (11, 11), 4, 0, 1),     # kernel == input: a 1x1 output
    (1, 2, 3, 9, 9, (11, 11), 4, 3, 1),       # padding past the image both sides
    (2, 4, 6, 17, 13, (5, 5), 2, 2, 2),       # groups
    (2, 3, 4, 30, 29, (11, 11), 4, 0, 1),     # the last 2 rows, last column unread
    (1, 2, 3, 14, 15, (12, 12), 4, 0, 1),     # 12x12: rows 12-13, columns 12-14 unread
    (1, 4, 4, 14, 16, (6, 6), 2, 1, 1),       # 6x6 at stride 2: no padded taps
    (2, 6, 3, 20, 19, (9, 9), 3, 4, 3),       # stride 3, groups 3
    (2, 3, 5, 12, 15, (12, 12), 4, 4, 1),     # 12x12 at stride 4
    (2, 3, 4, 10, 11, (5, 3), (2, 1), (1, 0), 1),   # per-axis stride and kernel
]


def _id(case):
    N, C, K, H, W, (R, S), stride, padding, groups = case
    return f"N{N}C{C}K{K}_{H}x{W}_k{R}x{S}_s{stride}_p{padding}_g{groups}".replace(" ", "")


def _arrays(case, dtype, seed):
    N, C, K, H, W, (R, S), stride, padding, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b, dict(stride=stride, padding=padding, groups=groups)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", STRIDED, ids=_id)
def test_strided_passes_match_reference(case, dtype):
    x, w, b, geom = _arrays(case, dtype, seed=len(_id(case)))
    x_before, w_before = x.copy(), w.copy()
    y_ref = conv2d_ref(x, w, b, **geom)
    gy = np.random.default_rng(1).standard_normal(y_ref.shape).astype(dtype)
    gx_ref, gw_ref, gb_ref = conv2d_backward_ref(gy, x, w, **geom)
    y = F.conv2d(x, w, b, algorithm="winograd", **geom)
    assert y.dtype == dtype and y.shape == y_ref.shape
    scale = lambda ref: dict(TOL[dtype], atol=TOL[dtype]["atol"] * max(1.0, np.abs(ref).max()))
    np.testing.assert_allclose(y, y_ref, **scale(y_ref), err_msg="forward")
    gx, gw, gb = F.conv2d_backward(gy, x, w, algorithm="winograd", **geom)
    for got, ref, what in ((gx, gx_ref, "grad_x"), (gw, gw_ref, "grad_w"), (gb, gb_ref, "grad_b")):
        np.testing.assert_allclose(got, ref, **scale(ref), err_msg=what)
    # Each gradient alone takes the same path.
    gx_only = F.conv2d_backward(gy, x, w, algorithm="winograd", weight_grad=False,
                                bias=False, **geom)[0]
    np.testing.assert_array_equal(gx_only, gx)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(w, w_before)


@pytest.mark.parametrize("case", [STRIDED[i] for i in (1, 4, 5, 8, 10)], ids=_id)
def test_strided_gradients_match_finite_differences(case, rng):
    x, w, b, geom = _arrays(case, np.float64, seed=3)
    check_conv2d_gradients(x, w, b, geom, "winograd", rng)


@pytest.mark.parametrize("case", STRIDED, ids=_id)
def test_phases_and_their_adjoints(case, rng):
    """<phase_input(x), x'> == <x, input_grad(x')> and the same for the
    weights: the gradients are the transforms' exact adjoints."""
    x, w, _, geom = _arrays(case, np.float64, seed=5)
    spec = conv_spec(x.shape, w.shape, x.dtype, geom["stride"], geom["padding"], 1,
                     geom["groups"], "t")
    run = phases.phase_spec(spec)
    assert (run.R, run.S, run.stride, run.OH, run.OW) == (3, 3, (1, 1), spec.OH, spec.OW)
    xs = phases.phase_input(x, spec, run)
    other = rng.standard_normal(xs.shape)
    back = np.full_like(x, np.nan)
    phases.input_grad(other, spec, run, back)
    assert np.isclose(np.vdot(xs, other), np.vdot(x, back), rtol=1e-12)
    ws = phases.phase_weights(w, spec)
    assert ws.shape == (spec.K, run.Cg, 3, 3)
    other_w = rng.standard_normal(ws.shape)
    back_w = np.full_like(w, np.nan)
    phases.weight_grad(other_w, spec, back_w)
    assert np.isclose(np.vdot(ws, other_w), np.vdot(w, back_w), rtol=1e-12)


@pytest.mark.parametrize("where", ["x", "grad_y", "weight"])
def test_strided_non_finite_values_give_im2col_result(where, rng):
    x = rng.random((2, 3, 35, 35))
    w = rng.random((8, 3, 11, 11))
    gy = rng.random((2, 8, 7, 7))
    if where == "x":
        x[1, 2, 13, 9] = np.inf
    elif where == "grad_y":
        gy[0, 3, 4, 4] = -np.inf
    else:
        w[2, 1, 10, 0] = np.nan
    geom = dict(stride=4, padding=0)
    y = F.conv2d(x, w, algorithm="winograd", **geom)
    np.testing.assert_allclose(y, F.conv2d(x, w, algorithm="im2col", **geom), rtol=1e-10)
    for g, e in zip(F.conv2d_backward(gy, x, w, algorithm="winograd", **geom),
                    F.conv2d_backward(gy, x, w, algorithm="im2col", **geom)):
        np.testing.assert_allclose(g, e, rtol=1e-10)


def test_unsupported_strided_kernels_say_why():
    x = np.zeros((1, 3, 32, 32), np.float32)
    for shape, stride, dilation, words in (
            ((4, 3, 3, 3), 2, 1, "needs stride 1, got stride=(2, 2)"),
            ((4, 3, 7, 7), 2, 1, "3 taps of each stride phase"),
            ((4, 3, 5, 5), 2, 2, "needs dilation 1")):
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            F.conv2d(x, np.zeros(shape, np.float32), stride=stride, dilation=dilation,
                     algorithm="winograd")


def test_auto_takes_winograd_for_alexnet_conv1_only():
    """Auto: AlexNet's conv1 (3 x 16 phase channels into 64 or 96 filters,
    121 of 144 taps) through the phases; not 5x5 at stride 2 (25 of 36
    taps), nor into 32 filters."""
    def pick(x_shape, w_shape, stride, padding):
        return select_algorithm(conv_spec(x_shape, w_shape, np.dtype(np.float32), stride,
                                          padding, 1, 1)).name
    assert pick((8, 3, 227, 227), (96, 3, 11, 11), 4, 0) == "winograd"
    assert pick((16, 3, 224, 224), (64, 3, 11, 11), 4, 2) == "winograd"
    assert pick((8, 64, 56, 56), (64, 64, 5, 5), 2, 2) == "im2col"
    assert pick((16, 3, 96, 96), (32, 3, 12, 12), 4, 4) == "im2col"


def test_strided_weights_cached_per_version():
    """Inference through the weight cache: the phase weights' transform is
    kept while the version is the same and redone when it changes."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 35, 35)).astype(np.float32)
    w = rng.standard_normal((8, 3, 11, 11)).astype(np.float32)
    spec = conv_spec(x.shape, w.shape, x.dtype, 4, 0, 1, 1, "t")
    algo = WinogradConv()
    y = np.empty(spec.out_shape, np.float32)
    algo.forward(x, w, None, y, spec, weight_version=1)
    first = y.copy()
    w *= 2
    algo.forward(x, w, None, y, spec, weight_version=1)   # same version: cached
    np.testing.assert_array_equal(y, first)
    algo.forward(x, w, None, y, spec, weight_version=2)
    np.testing.assert_allclose(y, 2 * first, rtol=1e-5, atol=1e-5 * np.abs(first).max())
