"""batch_norm, batch_norm_backward and fold_batch_norm against the float64
references in ref_pool.py (the backward one a staged chain rule), hand
computed running statistics, finite differences, bad arguments, and
PyTorch as a peer when it is installed."""
import numpy as np
import pytest

import convcore
import convcore.functional as F
import ref_pool as ref
from gradcheck import directional_check
from bad_arguments import bad_argument_test

RTOL = {np.float32: 2e-5, np.float64: 1e-11}
ATOL = {np.float32: 2e-5, np.float64: 1e-11}

SHAPES = [(4, 3), (2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 3), (3, 1, 1, 1)]


def _params(rng, C, dtype, affine):
    rm = rng.standard_normal(C).astype(dtype)
    rv = (rng.random(C) + 0.5).astype(dtype)
    if not affine:
        return rm, rv, None, None
    return (rm, rv, rng.standard_normal(C).astype(dtype),
            rng.standard_normal(C).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_training_forward_and_running_update(rng, dtype, shape, affine):
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    rm, rv, w, b = _params(rng, shape[1], dtype, affine)
    rm_obj, rv_obj = rm, rv
    y_ref, mean_ref, inv_ref, rm_ref, rv_ref = ref.batch_norm(
        x, rm, rv, w, b, training=True, momentum=0.3, eps=1e-3)
    y, mean, invstd = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.3,
                                   eps=1e-3, return_stats=True)
    assert y.dtype == mean.dtype == invstd.dtype == dtype
    np.testing.assert_allclose(y, y_ref, rtol=RTOL[dtype], atol=ATOL[dtype])
    np.testing.assert_allclose(mean, mean_ref, rtol=RTOL[dtype], atol=ATOL[dtype])
    np.testing.assert_allclose(invstd, inv_ref, rtol=RTOL[dtype], atol=ATOL[dtype])
    # Updated in place: the very same arrays hold the new estimates.
    assert rm is rm_obj and rv is rv_obj and rm.dtype == dtype
    np.testing.assert_allclose(rm, rm_ref, rtol=RTOL[dtype], atol=ATOL[dtype])
    np.testing.assert_allclose(rv, rv_ref, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_eval_forward_uses_running_stats(rng, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype)
    rm, rv, w, b = _params(rng, shape[1], dtype, True)
    before = (rm.copy(), rv.copy())
    y, mean, invstd = F.batch_norm(x, rm, rv, w, b, return_stats=True)
    y_ref, _, inv_ref, _, _ = ref.batch_norm(x, rm, rv, w, b)
    np.testing.assert_allclose(y, y_ref, rtol=RTOL[dtype], atol=ATOL[dtype])
    np.testing.assert_array_equal(mean, rm)
    np.testing.assert_allclose(invstd, inv_ref, rtol=RTOL[dtype])
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rv, before[1])


def test_running_update_by_hand():
    # One channel holding 1, 2, 3, 4: mean 2.5, biased variance 1.25 (used to
    # normalise), unbiased 5/3 (kept in the running estimate).
    x = np.array([[1.0], [2.0], [3.0], [4.0]])
    rm, rv = np.array([1.0]), np.array([2.0])
    y = F.batch_norm(x, rm, rv, training=True, momentum=0.25, eps=0.0)
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 2.5) / np.sqrt(1.25), rtol=1e-14)
    np.testing.assert_allclose(rm, [0.75 * 1.0 + 0.25 * 2.5], rtol=1e-15)
    np.testing.assert_allclose(rv, [0.75 * 2.0 + 0.25 * 5.0 / 3.0], rtol=1e-15)
    # A second step compounds on the updated values.
    F.batch_norm(x + 1, rm, rv, training=True, momentum=0.25, eps=0.0)
    np.testing.assert_allclose(rm, [0.75 * 1.375 + 0.25 * 3.5], rtol=1e-15)


def test_training_without_running_stats(rng):
    x = rng.standard_normal((5, 3, 2))
    y = F.batch_norm(x, None, None, training=True)
    np.testing.assert_allclose(y, ref.batch_norm(x, None, None, training=True)[0],
                               rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_backward_matches_staged_reference(rng, dtype, shape, training, affine):
    x = rng.standard_normal(shape).astype(dtype)
    rm, rv, w, b = _params(rng, shape[1], dtype, affine)
    _, mean, invstd = F.batch_norm(x, rm, rv, w, b, training=training,
                                   return_stats=True)
    gy = rng.standard_normal(shape).astype(dtype)
    gx, gw, gb = F.batch_norm_backward(gy, x, mean, invstd, w, training)
    gx_ref, gw_ref, gb_ref = ref.batch_norm_backward(gy, x, mean, invstd, w, training)
    assert gx.dtype == gb.dtype == dtype
    np.testing.assert_allclose(gx, gx_ref, rtol=RTOL[dtype], atol=10 * ATOL[dtype])
    np.testing.assert_allclose(gb, gb_ref, rtol=RTOL[dtype], atol=10 * ATOL[dtype])
    if affine:
        np.testing.assert_allclose(gw, gw_ref, rtol=RTOL[dtype], atol=10 * ATOL[dtype])
    else:
        assert gw is None


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 3), (1, 2, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_gradients_finite_differences(rng, shape, training):
    x = rng.standard_normal(shape)
    C = shape[1]
    rm, rv = rng.standard_normal(C), rng.random(C) + 0.5
    w, b = rng.standard_normal(C), rng.standard_normal(C)

    def forward(x_, w_, b_):
        # Fresh running copies: the update must not leak between probes.
        return F.batch_norm(x_, rm.copy(), rv.copy(), w_, b_, training=training)

    _, mean, invstd = F.batch_norm(x, rm.copy(), rv.copy(), w, b,
                                   training=training, return_stats=True)
    gy = rng.standard_normal(shape)
    grads = F.batch_norm_backward(gy, x, mean, invstd, w, training)
    directional_check(forward, [x, w, b], list(grads), gy, rng)


def test_variance_is_stable_for_large_means(rng):
    # float32 data at 1e4 with spread 0.1: a one-pass E[x^2] - E[x]^2 in
    # float32 loses every digit; two passes in double keep them.
    x = (1e4 + 0.1 * rng.standard_normal((64, 2, 8, 8))).astype(np.float32)
    y, mean, invstd = F.batch_norm(x, None, None, training=True, eps=0.0,
                                   return_stats=True)
    y_ref, mean_ref, inv_ref, _, _ = ref.batch_norm(x, None, None, training=True, eps=0.0)
    np.testing.assert_allclose(invstd, inv_ref, rtol=1e-5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)


def test_float32_agrees_with_float64_and_threads_do_not_matter(rng):
    x = rng.standard_normal((4, 6, 5, 5))
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    y64, m64, i64 = F.batch_norm(x, None, None, w, b, True, return_stats=True)
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    y32, m32, i32 = F.batch_norm(x32, None, None, w32, b32, True, return_stats=True)
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    previous = convcore.set_num_threads(1)
    try:
        one = F.batch_norm_backward(gy, x32, m32, i32, w32)
        y_one = F.batch_norm(x32, None, None, w32, b32, True)
        convcore.set_num_threads(2)
        two = F.batch_norm_backward(gy, x32, m32, i32, w32)
        y_two = F.batch_norm(x32, None, None, w32, b32, True)
    finally:
        convcore.set_num_threads(previous)
    np.testing.assert_array_equal(y_one, y_two)
    for a, b_ in zip(one, two):
        np.testing.assert_array_equal(a, b_)


def test_inputs_unchanged_and_odd_layouts(rng):
    x = rng.standard_normal((4, 3, 6, 6))[:, :, ::2, ::2]   # non-contiguous
    w = rng.standard_normal(6)[::2]
    b = rng.standard_normal(3)
    for a in (x, w, b):
        a.flags.writeable = False
    saved = [a.copy() for a in (x, w, b)]
    y, mean, invstd = F.batch_norm(x, None, None, w, b, training=True,
                                   return_stats=True)
    np.testing.assert_allclose(y, ref.batch_norm(saved[0], None, None, saved[1],
                                                 saved[2], training=True)[0],
                               rtol=1e-11, atol=1e-12)
    gy = rng.standard_normal(x.shape)
    gy_saved = gy.copy()
    F.batch_norm_backward(gy, x, mean, invstd, w)
    # Eval reads the running statistics only: read-only ones are fine.
    rm, rv = np.zeros(3), np.ones(3)
    rm.flags.writeable = rv.flags.writeable = False
    F.batch_norm(x, rm, rv, w, b)
    for a, s in zip((x, w, b, gy), saved + [gy_saved]):
        np.testing.assert_array_equal(a, s)


def test_empty_batch_in_eval():
    x = np.zeros((0, 3, 2, 2), dtype=np.float32)
    y = F.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32))
    assert y.shape == x.shape and y.dtype == np.float32


X = np.zeros((4, 3, 2, 2), dtype=np.float32)
V3 = np.zeros(3, dtype=np.float32)
ONES3 = np.ones(3, dtype=np.float32)
READ_ONLY = np.zeros(3, dtype=np.float32)
READ_ONLY.flags.writeable = False
STRIDED = np.zeros(6, dtype=np.float32)[::2]

BAD = [
    (F.batch_norm, (X.astype(np.int64), V3, ONES3), {}, TypeError, "float32 or float64"),
    (F.batch_norm, (X[0, 0, 0], V3, ONES3), {}, ValueError, "must be (2, 3, 4)-D"),
    (F.batch_norm, (X[None], V3, ONES3), {}, ValueError, "must be (2, 3, 4)-D"),
    (F.batch_norm, (X, V3[:2], ONES3), {}, ValueError, "running_mean must have shape (3,)"),
    (F.batch_norm, (X, V3, ONES3.astype(np.float64)), {}, TypeError, "running_var has dtype float64"),
    (F.batch_norm, (X, None, ONES3), {}, ValueError, "running_mean is required when training=False"),
    (F.batch_norm, (X, STRIDED, ONES3), {"training": True}, ValueError, "C-contiguous"),
    (F.batch_norm, (X, READ_ONLY, ONES3), {"training": True}, ValueError, "read-only"),
    (F.batch_norm, (X, [0, 0, 0], ONES3), {"training": True}, TypeError, "numpy.ndarray"),
    (F.batch_norm, (X, V3, ONES3, ONES3[:1]), {}, ValueError, "weight must have shape (3,)"),
    (F.batch_norm, (X, V3, ONES3, None, V3.astype(np.float64)), {}, TypeError, "bias has dtype"),
    (F.batch_norm, (X, V3, ONES3), {"training": 1}, TypeError, "training must be a bool"),
    (F.batch_norm, (X, V3, ONES3), {"momentum": None}, TypeError, "momentum=None"),
    (F.batch_norm, (X, V3, ONES3), {"momentum": "0.1"}, TypeError, "momentum must be a real"),
    (F.batch_norm, (X, V3, ONES3), {"eps": -1e-5}, ValueError, "eps must be a finite number >= 0"),
    (F.batch_norm, (X, V3, ONES3), {"return_stats": "no"}, TypeError, "return_stats"),
    (F.batch_norm, (X[:1, :, :1, :1], V3.copy(), ONES3.copy()), {"training": True},
     ValueError, "more than 1 value per channel"),
    (F.batch_norm, (np.zeros((2, 0)), None, None), {"training": True}, ValueError, "empty"),
    (F.batch_norm_backward, (X[:2], X, V3, ONES3), {}, ValueError, "grad_y of shape (2, 3, 2, 2)"),
    (F.batch_norm_backward, (X.astype(np.float64), X, V3, ONES3), {}, TypeError, "grad_y has dtype"),
    (F.batch_norm_backward, (X, X, None, ONES3), {}, ValueError, "mean is required"),
    (F.batch_norm_backward, (X, X, V3, ONES3[:2]), {}, ValueError, "invstd must have shape (3,)"),
    (F.batch_norm_backward, (X, X, V3, ONES3), {"training": None}, TypeError, "training"),
    (F.fold_batch_norm, (np.zeros(3, np.float32), None, V3, ONES3, None, None), {},
     ValueError, "at least 2-D"),
    (F.fold_batch_norm, (np.zeros((3, 2, 1, 1), np.float32), None, V3[:2], ONES3, None, None), {},
     ValueError, "running_mean must have shape (3,)"),
    (F.fold_batch_norm, (np.zeros((3, 2, 1, 1), np.float32), None, None, ONES3, None, None), {},
     ValueError, "running_mean is required"),
    (F.fold_batch_norm, (np.zeros((3, 2, 1, 1), np.float32), None, V3, ONES3, None, None),
     {"eps": "1e-5"}, TypeError, "eps must be a real"),
]


test_bad_arguments = bad_argument_test(BAD)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups,conv_bias,affine", [(1, True, True), (2, False, True),
                                                     (1, False, False)])
def test_fold_batch_norm_equals_conv_then_bn(rng, dtype, groups, conv_bias, affine):
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 4 // groups, 3, 3)).astype(dtype)
    cb = rng.standard_normal(6).astype(dtype) if conv_bias else None
    rm, rv, g, beta = _params(rng, 6, dtype, affine)
    saved = [a.copy() for a in (w, rm, rv)]
    y = F.batch_norm(F.conv2d(x, w, cb, 2, 1, groups=groups), rm, rv, g, beta, eps=1e-3)
    fw, fb = F.fold_batch_norm(w, cb, rm, rv, g, beta, eps=1e-3)
    assert fw.dtype == fb.dtype == dtype and fw.shape == w.shape and fb.shape == (6,)
    y_folded = F.conv2d(x, fw, fb, 2, 1, groups=groups)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(y_folded, y, rtol=tol, atol=tol)
    for a, s in zip((w, rm, rv), saved):
        np.testing.assert_array_equal(a, s)


# ---------------------------------------------------------------------------
# PyTorch as a peer (skipped where torch is not installed, as on CI).

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_matches_torch(rng, shape, training):
    torch = pytest.importorskip("torch")
    C = shape[1]
    x = rng.standard_normal(shape).astype(np.float32) + 2
    rm, rv, w, b = _params(rng, C, np.float32, True)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.batch_norm(xt, trm, trv, wt, bt, training, 0.2, 1e-4)
    y, mean, invstd = F.batch_norm(x, rm, rv, w, b, training, 0.2, 1e-4,
                                   return_stats=True)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-6, atol=1e-6)
    gy = rng.standard_normal(shape).astype(np.float32)
    ty.backward(torch.from_numpy(gy))
    gx, gw, gb = F.batch_norm_backward(gy, x, mean, invstd, w, training)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_fold_matches_torch_fuser():
    torch = pytest.importorskip("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_weights
    rng = np.random.default_rng(3)
    w, cb, rm, g, beta = (rng.standard_normal(s) for s in ((5, 3, 3, 3), 5, 5, 5, 5))
    rv = rng.random(5) + 0.5
    tw, tb = fuse_conv_bn_weights(*(torch.from_numpy(a) for a in (w, cb, rm, rv)), 1e-5,
                                  torch.from_numpy(g), torch.from_numpy(beta))
    fw, fb = F.fold_batch_norm(w, cb, rm, rv, g, beta)
    np.testing.assert_allclose(fw, tw.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(fb, tb.detach().numpy(), rtol=1e-12)
