"""Bad calls raise ValueError/TypeError naming the argument and shapes, and
no call ever modifies the caller's arrays."""
import numpy as np
import pytest

from convcore import F

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
W = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
B = rng.standard_normal(6).astype(np.float32)

BAD_FORWARD = [
    (dict(x=X.astype(np.int32)), TypeError, "float32 or float64"),
    (dict(x=X.astype(np.float16)), TypeError, "float32 or float64"),
    (dict(x=X.tolist()), TypeError, "numpy.ndarray"),
    (dict(x=None), TypeError, "numpy.ndarray"),
    (dict(x=X[0]), ValueError, "4-D"),
    (dict(weight=W[0]), ValueError, "weight must be 4-D"),
    (dict(weight=W.astype(np.float64)), TypeError, "weight has dtype float64"),
    (dict(weight=W[:, :3]), ValueError, "expects 3 input channels"),
    (dict(bias=B[:5]), ValueError, "bias must have shape (6,)"),
    (dict(bias=B.astype(np.float64)), TypeError, "bias has dtype float64"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(stride=(1, -2)), ValueError, "stride must be >= 1"),
    (dict(stride=1.5), TypeError, "stride must be an int"),
    (dict(stride=(1, 2, 3)), ValueError, "stride must be an int or a pair"),
    (dict(dilation=0), ValueError, "dilation must be >= 1"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding="full"), ValueError, "'same' or 'valid'"),
    (dict(padding="same", stride=2), ValueError, "padding='same' needs stride 1"),
    (dict(groups=0), ValueError, "groups must be >= 1"),
    (dict(groups=3), ValueError, "groups=3 does not divide the input's 4 channels"),
    (dict(groups=True), TypeError, "groups must be an int"),
    (dict(weight=np.zeros((5, 2, 3, 3), np.float32), groups=2), ValueError, "does not divide the weight's 5 output"),
    (dict(weight=np.zeros((6, 4, 9, 3), np.float32)), ValueError, "larger than the padded input 8x8"),
    (dict(dilation=4, padding=0), ValueError, "dilated extent 9x9"),
    (dict(weight=np.zeros((6, 4, 0, 3), np.float32)), ValueError, "empty dimension"),
    (dict(x=np.zeros((2, 4, 0, 8), np.float32)), ValueError, "empty channel or spatial"),
    (dict(algorithm="fft"), ValueError, "unknown algorithm 'fft'"),
    (dict(algorithm="winograd", stride=2), ValueError, "'winograd' does not support this configuration: needs stride 1, got stride=(2, 2)"),
    (dict(algorithm="winograd", weight=np.zeros((6, 4, 5, 5), np.float32)), ValueError, "needs a 3x3 kernel, got 5x5"),
    (dict(algorithm=None), TypeError, "algorithm must be a string"),
]


@pytest.mark.parametrize("kwargs,exc,fragment", BAD_FORWARD, ids=[f[2] for f in BAD_FORWARD])
def test_bad_forward_call(kwargs, exc, fragment):
    args = dict(x=X, weight=W, bias=B)
    args.update(kwargs)
    before = [a.copy() for a in (X, W, B)]
    with pytest.raises(exc) as info:
        F.conv2d(**args)
    assert fragment in str(info.value)
    assert "conv2d" in str(info.value)
    for a, b in zip((X, W, B), before):
        np.testing.assert_array_equal(a, b)


def test_shape_errors_show_the_shapes():
    with pytest.raises(ValueError) as info:
        F.conv2d(X, W[:, :3])
    assert "(2, 4, 8, 8)" in str(info.value) and "(6, 3, 3, 3)" in str(info.value)


BAD_BACKWARD = [
    (dict(grad_y=np.zeros((2, 6, 5, 5), np.float32)), ValueError, "grad_y has shape (2, 6, 5, 5) but"),
    (dict(grad_y=np.zeros((2, 6, 6, 6), np.float64)), TypeError, "grad_y has dtype float64"),
    (dict(grad_y=np.zeros((2, 6, 6), np.float32)), ValueError, "grad_y must be 4-D"),
    (dict(groups=5), ValueError, "groups=5 does not divide"),
]


@pytest.mark.parametrize("kwargs,exc,fragment", BAD_BACKWARD, ids=[f[2] for f in BAD_BACKWARD])
def test_bad_backward_call(kwargs, exc, fragment):
    args = dict(grad_y=np.ones((2, 6, 6, 6), np.float32), x=X, weight=W)
    args.update(kwargs)
    with pytest.raises(exc) as info:
        F.conv2d_backward(**args)
    assert fragment in str(info.value) and "conv2d_backward" in str(info.value)


def test_non_contiguous_and_read_only_inputs_work_and_are_untouched():
    base = rng.standard_normal((2, 8, 10, 9))
    x = base[:, ::2, 1:, :]                           # strided view
    w = np.asfortranarray(rng.standard_normal((5, 4, 3, 3)))
    b = rng.standard_normal(10)[::2]
    for a in (base, w, b):
        a.setflags(write=False)
    snapshot = [a.copy() for a in (base, w, b)]
    expect = F.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), np.ascontiguousarray(b), padding=1)
    for algo in ("direct", "im2col", "auto"):
        y = F.conv2d(x, w, b, padding=1, algorithm=algo)
        np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-12)
        gy = np.ones_like(y)[:, :, ::-1]              # negative strides
        gx, gw, gb = F.conv2d_backward(gy, x, w, padding=1, algorithm=algo)
        assert gx.shape == x.shape and gw.shape == w.shape
        assert np.shares_memory(gx, base) is False
    for a, s in zip((base, w, b), snapshot):
        np.testing.assert_array_equal(a, s)


def test_output_never_aliases_input():
    x = rng.standard_normal((1, 3, 4, 4))
    w = np.ones((3, 1, 1, 1))
    y = F.conv2d(x, w, groups=3)
    assert not np.shares_memory(y, x)
    np.testing.assert_array_equal(y, x)
