"""Max, average and adaptive pooling against the float64 loop references in
ref_pool.py, finite-difference gradients, NaN/tie rules, bad arguments,
PyTorch as a peer when it is installed; the fast paths (the cache of
checked pooling geometry in functional/pooling.py, MaxPool2d skipping the
argmax indices when nothing is kept for backward) give the same results
and the same errors."""
import itertools

import numpy as np
import pytest

import convcore
import ref_pool as ref
from convcore import F, nn
from convcore.functional import pooling as fpool
from gradcheck import directional_check
from bad_arguments import bad_argument_test

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-6, np.float64: 1e-12}

SHAPES = [(2, 3, 7, 6), (1, 2, 5, 9), (1, 1, 4, 4)]


def _max_grid():
    """A seeded sample of valid (shape, kernel, stride, padding, dilation,
    ceil_mode): padding at most half the kernel, the window fitting."""
    cases = []
    for shape, k, s, p, d, ceil in itertools.product(
            SHAPES, [1, 2, 3, (2, 3)], [None, 1, 2, (1, 2)], [0, 1, (0, 1)],
            [1, 2, (1, 2)], [False, True]):
        kh, kw = ref._as_pair(k)
        ph, pw = ref._as_pair(p)
        dh, dw = ref._as_pair(d)
        if ph > kh // 2 or pw > kw // 2:
            continue
        sh, sw = ref._as_pair(k if s is None else s)
        # A dilated window longer than the padded input is an error in
        # convcore (API.md), though torch's ceil_mode lets some through.
        if (dh * (kh - 1) + 1 > shape[2] + 2 * ph
                or dw * (kw - 1) + 1 > shape[3] + 2 * pw):
            continue
        if (ref.pool_out_size(shape[2], kh, sh, ph, dh, ceil) < 1
                or ref.pool_out_size(shape[3], kw, sw, pw, dw, ceil) < 1):
            continue
        cases.append((shape, k, s, p, d, ceil))
    pick = np.random.default_rng(7).choice(len(cases), size=30, replace=False)
    return [cases[i] for i in sorted(pick)]


MAX_GRID = _max_grid()
AVG_GRID = sorted({(shape, k, s, p, ceil) for shape, k, s, p, d, ceil in MAX_GRID},
                  key=repr)[::2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k,s,p,d,ceil", MAX_GRID)
def test_max_pool_matches_reference(rng, dtype, shape, k, s, p, d, ceil):
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)
    y_ref, idx_ref = ref.max_pool2d(x, k, s, p, d, ceil)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, idx_ref)
    # Max picks an input element: exact in either dtype.
    np.testing.assert_array_equal(y, y_ref.astype(dtype))
    np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, d, ceil_mode=ceil), y)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = F.max_pool2d_backward(gy, idx, x.shape)
    assert gx.dtype == dtype
    np.testing.assert_allclose(gx, ref.max_pool2d_backward(gy, idx_ref, x.shape),
                               rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k,s,p,ceil", AVG_GRID)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_matches_reference(rng, dtype, shape, k, s, p, ceil,
                                    count_include_pad):
    x = rng.standard_normal(shape).astype(dtype)
    y = F.avg_pool2d(x, k, s, p, ceil, count_include_pad)
    assert y.dtype == dtype
    fwd = lambda a: ref.avg_pool2d(a, k, s, p, ceil, count_include_pad)  # noqa: E731
    np.testing.assert_allclose(y, fwd(x), rtol=RTOL[dtype], atol=ATOL[dtype])
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = F.avg_pool2d_backward(gy, x.shape, k, s, p, ceil, count_include_pad)
    assert gx.dtype == dtype
    np.testing.assert_allclose(
        gx, ref.avg_pool2d_backward(gy, x.shape, k, s, p, ceil, count_include_pad),
        rtol=RTOL[dtype], atol=ATOL[dtype])


def test_avg_pool_reference_backward_is_the_transpose(rng):
    # The scatter reference above, checked once against the forward
    # reference's own transpose (built column by column).
    args = (3, 2, 1, True, False)
    x_shape = (1, 2, 6, 5)
    gy = rng.standard_normal((1, 2, 4, 3))
    np.testing.assert_allclose(
        ref.avg_pool2d_backward(gy, x_shape, *args),
        ref.linear_map_transpose(lambda a: ref.avg_pool2d(a, *args), x_shape, gy),
        rtol=1e-13)


ADAPTIVE = [((2, 3, 7, 6), 1), ((2, 3, 7, 6), (3, 4)), ((1, 2, 5, 9), (5, 2)),
            ((1, 1, 3, 3), (5, 7)),        # larger than the input: overlapping
            ((1, 2, 1, 1), 1), ((2, 1, 6, 6), (None, 4))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,out", ADAPTIVE)
def test_adaptive_pools_match_reference(rng, dtype, shape, out):
    x = rng.standard_normal(shape).astype(dtype)
    out_pair = tuple(shape[2 + i] if v is None else v
                     for i, v in enumerate(ref._as_pair(out)))
    y = F.adaptive_avg_pool2d(x, out)
    fwd = lambda a: ref.adaptive_avg_pool2d(a, out_pair)  # noqa: E731
    assert y.shape == shape[:2] + out_pair and y.dtype == dtype
    np.testing.assert_allclose(y, fwd(x), rtol=RTOL[dtype], atol=ATOL[dtype])
    gy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(F.adaptive_avg_pool2d_backward(gy, x.shape),
                               ref.linear_map_transpose(fwd, x.shape, gy),
                               rtol=RTOL[dtype], atol=ATOL[dtype])
    ym, idx = F.adaptive_max_pool2d(x, out, return_indices=True)
    ym_ref, idx_ref = ref.adaptive_max_pool2d(x, out_pair)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(ym, ym_ref.astype(dtype))
    np.testing.assert_allclose(F.adaptive_max_pool2d_backward(gy, idx, x.shape),
                               ref.max_pool2d_backward(gy, idx_ref, x.shape),
                               rtol=RTOL[dtype], atol=ATOL[dtype])


def test_global_average_pool_is_the_mean(rng):
    x = rng.standard_normal((3, 4, 5, 7))
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, 1)[:, :, 0, 0],
                               x.mean(axis=(2, 3)), rtol=1e-13)


@pytest.mark.parametrize("k,s,p,d,ceil", [(3, 2, 1, 1, True), ((2, 3), 1, (1, 1), 2, False)])
def test_max_pool_gradient_finite_differences(rng, k, s, p, d, ceil):
    x = rng.standard_normal((2, 2, 6, 7))   # continuous values: no ties
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    gy = rng.standard_normal(y.shape)
    gx = F.max_pool2d_backward(gy, idx, x.shape)
    directional_check(lambda a: F.max_pool2d(a, k, s, p, d, ceil), [x], [gx], gy, rng)


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_gradient_finite_differences(rng, count_include_pad):
    x = rng.standard_normal((2, 2, 6, 7))
    args = ((3, 2), 2, 1, True, count_include_pad)
    y = F.avg_pool2d(x, *args)
    gy = rng.standard_normal(y.shape)
    gx = F.avg_pool2d_backward(gy, x.shape, *args)
    directional_check(lambda a: F.avg_pool2d(a, *args), [x], [gx], gy, rng)


def test_adaptive_gradients_finite_differences(rng):
    x = rng.standard_normal((2, 2, 7, 5))
    gy = rng.standard_normal((2, 2, 3, 4))
    directional_check(lambda a: F.adaptive_avg_pool2d(a, (3, 4)), [x],
                      [F.adaptive_avg_pool2d_backward(gy, x.shape)], gy, rng)
    _, idx = F.adaptive_max_pool2d(x, (3, 4), return_indices=True)
    directional_check(lambda a: F.adaptive_max_pool2d(a, (3, 4)), [x],
                      [F.adaptive_max_pool2d_backward(gy, idx, x.shape)], gy, rng)


def test_ceil_mode_edge_windows():
    # H=5, k=2, s=2: ceil_mode adds a window over the last row alone; with
    # padding 1 and k=3, s=2, H=6 the ceil window starts in the last row and
    # runs past the padding: count_include_pad divides by the rows up to the
    # padding's end (2 rows x 3 cols), never by the full 3x3.
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    y = F.max_pool2d(x, 2, ceil_mode=True)
    assert y.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(y[0, 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
    x = np.ones((1, 1, 6, 6))
    y = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True)
    assert y.shape == (1, 1, 4, 4)
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9)      # corner: 2x2 of 3x3 real
    assert y[0, 0, 3, 3] == pytest.approx(1 / 4)      # 1x1 real of 2x2 (to pad end)
    y = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_array_equal(y, np.ones((1, 1, 4, 4)))


def test_max_pool_ties_take_first_index():
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    y, idx = F.max_pool2d(x, 2, 1, return_indices=True)
    expected = np.array([[0, 1, 2], [4, 5, 6], [8, 9, 10]])
    np.testing.assert_array_equal(idx[0, 0], expected)
    gx = F.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    # Overlapping windows route to their first positions only.
    np.testing.assert_array_equal(gx[0, 0], [[1, 1, 1, 0], [1, 1, 1, 0],
                                             [1, 1, 1, 0], [0, 0, 0, 0]])


def test_max_pool_nan_wins_and_inf_windows():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 2:, 2:] = -np.inf
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0])
    assert idx[0, 0, 0, 0] == 5            # the last NaN of the window, as torch
    assert y[0, 0, 1, 1] == -np.inf and idx[0, 0, 1, 1] == 10
    assert y[0, 0, 0, 1] == 7 and y[0, 0, 1, 0] == 13
    assert np.isnan(F.avg_pool2d(x, 2)[0, 0, 0, 0])
    assert np.isnan(F.adaptive_max_pool2d(x, 1)[0, 0, 0, 0])


def test_all_minus_inf_windows_report_their_first_input_tap():
    x = np.full((1, 1, 3, 4), -np.inf)
    y, idx = F.max_pool2d(x, 3, 1, 1, return_indices=True)
    assert np.all(y == -np.inf)
    # Window (oh, ow) starts at row max(oh-1, 0), column max(ow-1, 0).
    np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1, 2], [0, 0, 1, 2], [4, 4, 5, 6]])
    np.testing.assert_array_equal(idx, ref.max_pool2d(x, 3, 1, 1)[1])


def test_dilated_window_wholly_in_padding():
    # k=2, padding 1, dilation 3 on H=2: the taps are rows -1 and 2, both
    # outside: -inf, index -1, and no gradient flows from it.
    x = np.ones((1, 1, 2, 2))
    y, idx = F.max_pool2d(x, 2, 2, 1, 3, return_indices=True)
    assert y.shape == (1, 1, 1, 1)
    assert y[0, 0, 0, 0] == -np.inf and idx[0, 0, 0, 0] == -1
    np.testing.assert_array_equal(F.max_pool2d_backward(np.ones_like(y), idx, x.shape), 0)


def test_float32_agrees_with_float64(rng):
    x = rng.standard_normal((2, 3, 9, 8))
    x32 = x.astype(np.float32)
    for f in (lambda a: F.avg_pool2d(a, 3, 2, 1, True, False),
              lambda a: F.adaptive_avg_pool2d(a, (4, 3)),
              lambda a: F.max_pool2d(a, 3, 2, 1, 2)):
        np.testing.assert_allclose(f(x32), f(x), rtol=1e-5, atol=1e-6)


def test_thread_count_does_not_change_results(rng):
    x = rng.standard_normal((3, 5, 9, 8)).astype(np.float32)
    previous = convcore.set_num_threads(1)
    try:
        one = [F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1),
               F.adaptive_avg_pool2d(x, 2)]
        convcore.set_num_threads(2)
        two = [F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1),
               F.adaptive_avg_pool2d(x, 2)]
    finally:
        convcore.set_num_threads(previous)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_inputs_unchanged_and_odd_layouts_accepted(rng):
    base = rng.standard_normal((3, 2, 8, 10))
    x = base[:, :, ::2, ::2]              # non-contiguous
    x.flags.writeable = False
    before = x.copy()
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y, ref.max_pool2d(before, 2)[0])
    gy = rng.standard_normal(y.shape)[..., ::1]
    gy.flags.writeable = False
    gy_before = gy.copy()
    F.max_pool2d_backward(gy, idx, x.shape)
    F.avg_pool2d_backward(gy, x.shape, 2)
    F.adaptive_avg_pool2d_backward(gy, x.shape)
    np.testing.assert_allclose(F.avg_pool2d(x, 2), ref.avg_pool2d(before, 2), rtol=1e-13)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(gy, gy_before)


def test_empty_batch_and_single_pixel():
    x = np.zeros((0, 3, 4, 4), dtype=np.float32)
    assert F.max_pool2d(x, 2).shape == (0, 3, 2, 2)
    assert F.avg_pool2d(x, 2).shape == (0, 3, 2, 2)
    assert F.max_pool2d_backward(np.zeros((0, 3, 2, 2), np.float32),
                                 np.zeros((0, 3, 2, 2), np.int64), x.shape).shape == x.shape
    one = np.array([[[[2.5]]]], dtype=np.float32)
    assert F.max_pool2d(one, 1)[0, 0, 0, 0] == 2.5
    assert F.avg_pool2d(one, 1)[0, 0, 0, 0] == 2.5
    assert F.adaptive_avg_pool2d(one, 1)[0, 0, 0, 0] == 2.5


X = np.zeros((1, 2, 5, 5), dtype=np.float32)
GY = np.zeros((1, 2, 2, 2), dtype=np.float32)
IDX = np.zeros((1, 2, 2, 2), dtype=np.int64)

BAD = [
    (F.max_pool2d, (X.astype(np.int32), 2), {}, TypeError, "float32 or float64"),
    (F.max_pool2d, (X[0], 2), {}, ValueError, "must be 4-D"),
    (F.max_pool2d, ([[1.0]], 2), {}, TypeError, "numpy.ndarray"),
    (F.max_pool2d, (X, 0), {}, ValueError, "kernel_size must be >= 1"),
    (F.max_pool2d, (X, (2, 2, 2)), {}, ValueError, "kernel_size must be an int or a pair"),
    (F.max_pool2d, (X, 2.0), {}, TypeError, "kernel_size must be an int"),
    (F.max_pool2d, (X, 2, 0), {}, ValueError, "stride must be >= 1"),
    (F.max_pool2d, (X, 2, 1, -1), {}, ValueError, "padding must be >= 0"),
    (F.max_pool2d, (X, 2, 1, 2), {}, ValueError, "at most half of kernel_size"),
    (F.max_pool2d, (X, 2), {"dilation": 0}, ValueError, "dilation must be >= 1"),
    (F.max_pool2d, (X, 6), {}, ValueError, "larger than the padded input 5x5"),
    (F.max_pool2d, (X, 3), {"dilation": 3}, ValueError, "dilated extent 7x7"),
    (F.max_pool2d, (X, 2), {"ceil_mode": "yes"}, TypeError, "ceil_mode must be a bool"),
    (F.max_pool2d, (X, 2), {"return_indices": 1}, TypeError, "return_indices must be a bool"),
    (F.max_pool2d, (np.zeros((1, 0, 4, 4)), 2), {}, ValueError, "empty channel"),
    (F.avg_pool2d, (X, 3, 1, 2), {}, ValueError, "at most half of kernel_size"),
    (F.avg_pool2d, (X, 2), {"count_include_pad": None}, TypeError, "count_include_pad"),
    (F.adaptive_avg_pool2d, (X, 0), {}, ValueError, "output_size must be >= 1"),
    (F.adaptive_avg_pool2d, (X, (1, 2, 3)), {}, ValueError, "output_size must be an int or a pair"),
    (F.adaptive_max_pool2d, (X, -1), {}, ValueError, "output_size must be >= 1"),
    (F.max_pool2d_backward, (GY, IDX.astype(np.int32), X.shape), {}, TypeError, "int64"),
    (F.max_pool2d_backward, (GY, IDX[:, :, :1], X.shape), {}, ValueError, "grad_y's shape"),
    (F.max_pool2d_backward, (GY, IDX + 25, X.shape), {}, ValueError, "must lie in [0, 25)"),
    (F.max_pool2d_backward, (GY, IDX - 2, X.shape), {}, ValueError, "must lie in"),
    (F.max_pool2d_backward, (GY, IDX, (1, 3, 5, 5)), {}, ValueError, "batch and channels"),
    (F.max_pool2d_backward, (GY, IDX, (1, 2, 5)), {}, ValueError, "4-tuple"),
    (F.avg_pool2d_backward, (GY, X.shape, 3), {}, ValueError, "gives (1, 2, 1, 1)"),
    (F.avg_pool2d_backward, (GY.astype(np.float16), X.shape, 2), {}, TypeError, "grad_y must be float32"),
    (F.adaptive_avg_pool2d_backward, (GY, (1, 2, 0, 5)), {}, ValueError, "empty"),
]


test_bad_arguments = bad_argument_test(BAD)


# ---------------------------------------------------------------------------
# PyTorch as a peer (skipped where torch is not installed, as on CI).

@pytest.mark.parametrize("shape,k,s,p,d,ceil", MAX_GRID[::3])
def test_max_pool_matches_torch(rng, shape, k, s, p, d, ceil):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::7] = np.nan if shape[3] > 5 else 0.0
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(
        torch.from_numpy(x), k, s if s is not None else None, p, d, ceil, True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    gy = rng.standard_normal(y.shape).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    torch.nn.functional.max_pool2d(xt, k, s, p, d, ceil).backward(torch.from_numpy(gy))
    np.testing.assert_allclose(F.max_pool2d_backward(gy, idx, x.shape),
                               xt.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,k,s,p,ceil", AVG_GRID)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_matches_torch(rng, shape, k, s, p, ceil, count_include_pad):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape)
    xt = torch.from_numpy(x).requires_grad_()
    ty = torch.nn.functional.avg_pool2d(xt, k, s, p, ceil, count_include_pad)
    y = F.avg_pool2d(x, k, s, p, ceil, count_include_pad)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    gy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(
        F.avg_pool2d_backward(gy, x.shape, k, s, p, ceil, count_include_pad),
        xt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape,out", ADAPTIVE)
def test_adaptive_pools_match_torch(rng, shape, out):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape)
    xt = torch.from_numpy(x).requires_grad_()
    ty = torch.nn.functional.adaptive_avg_pool2d(xt, out)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, out), ty.detach().numpy(),
                               rtol=1e-12, atol=1e-14)
    gy = rng.standard_normal(ty.shape)
    ty.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(F.adaptive_avg_pool2d_backward(gy, x.shape),
                               xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    tm, tidx = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(x), out, True)
    ym, idx = F.adaptive_max_pool2d(x, out, return_indices=True)
    np.testing.assert_array_equal(ym, tm.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())


# --- fast paths: the cache of checked geometry, no argmax under no_grad ------

FAST_PATH_RNG = np.random.default_rng(11)


@pytest.fixture
def empty_cache():
    fpool._specs.clear()
    yield
    fpool._specs.clear()


def _awkward(shape, dtype=np.float32):
    """Ties, NaN, +-inf and plain values, so every branch of the max shows."""
    x = FAST_PATH_RNG.integers(-3, 4, size=shape).astype(dtype)  # many ties
    flat = x.reshape(-1)
    picks = FAST_PATH_RNG.choice(flat.size, size=(3, max(1, flat.size // 40)), replace=False)
    flat[picks[0]] = np.nan
    flat[picks[1]] = -np.inf
    flat[picks[2]] = np.inf
    return x


@pytest.mark.parametrize("k,s,p,d,ceil", [(2, 2, 0, 1, False), (3, 2, 1, 1, True),
                                          (3, 1, 1, 1, False), (3, 1, 1, 2, False),
                                          ((2, 3), (1, 2), (1, 0), (2, 1), True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_layer_under_no_grad_gives_the_training_output(k, s, p, d, ceil, dtype):
    layer = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil, dtype=dtype)
    x = _awkward((2, 3, 9, 8), dtype)
    y_grad = layer(x)
    gx = layer.backward(np.ones_like(y_grad))
    with convcore.no_grad():
        y_inf = layer(x)
    np.testing.assert_array_equal(y_inf, y_grad)  # NaN in the same places too
    # Integer values and infinities: exact in either precision.
    np.testing.assert_array_equal(y_inf, ref.max_pool2d(x, k, s, p, d, ceil)[0])
    assert layer._cache is None  # nothing kept: backward must refuse
    with pytest.raises(RuntimeError, match="nothing saved for backward"):
        layer.backward(np.ones_like(y_inf))
    assert gx.shape == x.shape


def _cache_good_calls():
    """Good calls whose checked geometry the bad ones must not reuse."""
    gy = np.zeros((1, 2, 2, 2), np.float32)
    for k, extra in ((2, {}), (3, {"dilation": 1}), (2, {"ceil_mode": True}),
                     (3, {"stride": 1, "padding": 1}), ((2, 2), {"stride": None})):
        F.max_pool2d(X, k, **extra)
    F.avg_pool2d(X, 2)
    F.avg_pool2d(X, 3, 1, 1)
    F.avg_pool2d_backward(gy, X.shape, 2)
    assert fpool._specs


test_bad_arguments_after_good_calls_are_cached = bad_argument_test(
    BAD, before=_cache_good_calls, fixtures=("empty_cache",))


@pytest.mark.parametrize("arg,good,bad", [("kernel_size", 2, 2.0), ("kernel_size", 2, True),
                                          ("stride", 1, True), ("stride", (1, 1), (1.0, 1)),
                                          ("dilation", 1, True), ("padding", 0, False)])
def test_equal_values_of_other_types_do_not_share_an_int_spec(empty_cache, arg, good, bad):
    args = dict(kernel_size=2, stride=1, padding=0, dilation=1)
    F.max_pool2d(X, **{**args, arg: good})
    with pytest.raises(TypeError, match=f"max_pool2d: {arg} must be an int"):
        F.max_pool2d(X, **{**args, arg: bad})


def test_ceil_mode_must_still_be_a_bool_after_a_cached_call(empty_cache):
    F.max_pool2d(X, 2, ceil_mode=True)
    with pytest.raises(TypeError, match="ceil_mode must be a bool"):
        F.max_pool2d(X, 2, ceil_mode=1)


def test_cached_results_equal_uncached_and_shapes_get_their_own_spec(empty_cache, monkeypatch):
    outs = {}
    for shape in ((2, 3, 9, 8), (2, 3, 10, 8), (1, 3, 9, 8)):
        x = FAST_PATH_RNG.standard_normal(shape).astype(np.float32)
        fpool._specs.clear()
        first = (F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True),
                 F.avg_pool2d(x, 3, 2, 1, True, False))
        for _ in range(2):
            (y, idx), a = (F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True),
                           F.avg_pool2d(x, 3, 2, 1, True, False))
            np.testing.assert_array_equal(y, first[0][0])
            np.testing.assert_array_equal(idx, first[0][1])
            np.testing.assert_array_equal(a, first[1])
            np.testing.assert_array_equal(y, ref.max_pool2d(x.astype(np.float64), 3, 2, 1, 1, True)[0])
        outs[shape] = y.shape
    assert outs[(2, 3, 9, 8)] != outs[(2, 3, 10, 8)]
    monkeypatch.setattr(fpool, "_SPEC_CACHE_SIZE", 2)
    for h in range(4, 10):
        F.avg_pool2d(np.ones((1, 1, h, 4), np.float32), 2)
        assert len(fpool._specs) <= 2


def test_pool_outputs_of_consecutive_calls_never_alias():
    layer = nn.MaxPool2d(2)
    x1 = FAST_PATH_RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    x2 = -x1
    for grad in (True, False):
        if grad:
            y1 = layer(x1); kept = y1.copy(); y2 = layer(x2)
        else:
            with convcore.no_grad():
                y1 = layer(x1); kept = y1.copy(); y2 = layer(x2)
        assert not np.shares_memory(y1, y2)
        np.testing.assert_array_equal(y1, kept)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool_inner_and_edge_windows_every_geometry(rng, dtype):
    """Windows wholly inside the plane take a shorter path than those that
    touch the padding or the ceil_mode edge (pool.pyx, _inside): every
    small geometry, both paths and both ways of counting, against the
    reference; an image where no window is inside and one of 1x1."""
    for H, W in ((1, 1), (2, 5), (5, 7), (6, 6)):
        x = rng.standard_normal((2, 3, H, W)).astype(dtype)
        for k in (1, 2, 3):
            for s in (1, 2, 3):
                for p in range(k // 2 + 1):
                    for ceil in (False, True):
                        if H + 2 * p < k or W + 2 * p < k:
                            continue
                        for cip in (True, False):
                            args = (k, s, p, ceil, cip)
                            y = F.avg_pool2d(x, *args)
                            np.testing.assert_allclose(
                                y, ref.avg_pool2d(x, *args), rtol=RTOL[dtype],
                                atol=ATOL[dtype], err_msg=str((H, W) + args))
                            gy = rng.standard_normal(y.shape).astype(dtype)
                            np.testing.assert_allclose(
                                F.avg_pool2d_backward(gy, x.shape, *args),
                                ref.avg_pool2d_backward(gy, x.shape, *args),
                                rtol=RTOL[dtype], atol=ATOL[dtype],
                                err_msg=str((H, W) + args))
