"""Bad calls raise ValueError/TypeError naming the argument and shapes, and
no call ever modifies the caller's arrays; the same errors after the plan
cache has seen good calls that differ only in the bad argument's value."""
import numpy as np
import pytest

from bad_arguments import bad_argument_test
from convcore import F
from convcore.functional import conv as fconv

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


def _calls(fn, good, table):
    """Harness cases: fn(**good) with each row's bad keyword arguments."""
    return [(fn, (), {**good, **kwargs}, exc, fragment) for kwargs, exc, fragment in table]


FORWARD_CALLS = _calls(F.conv2d, dict(x=X, weight=W, bias=B), BAD_FORWARD)
FORWARD_IDS = [f[2] for f in BAD_FORWARD]

test_bad_forward_call = bad_argument_test(FORWARD_CALLS, unchanged=(X, W, B), ids=FORWARD_IDS)


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


GY = np.ones((2, 6, 6, 6), np.float32)
BACKWARD_CALLS = _calls(F.conv2d_backward, dict(grad_y=GY, x=X, weight=W), BAD_BACKWARD)
BACKWARD_IDS = [f[2] for f in BAD_BACKWARD]

test_bad_backward_call = bad_argument_test(BACKWARD_CALLS, ids=BACKWARD_IDS)


# --- the same errors once the plan cache (functional/conv.py) holds plans --

@pytest.fixture
def empty_cache():
    fconv._plans.clear()
    yield
    fconv._plans.clear()


def _cache_good_forward_calls():
    # Good calls that differ from the bad one only in the bad argument's
    # value (stride=2 before 1.5, groups=1 before True, ...).
    for good in (dict(), dict(stride=2), dict(stride=(1, 2)), dict(padding=1),
                 dict(padding="same"), dict(groups=1), dict(groups=2, weight=W[:, :2]),
                 dict(dilation=2, padding=2), dict(algorithm="winograd"),
                 dict(algorithm="direct", stride=2)):
        args = dict(x=X, weight=W, bias=B)
        args.update(good)
        F.conv2d(**args)


def _cache_good_backward_call():
    F.conv2d(X, W, B)
    F.conv2d_backward(GY, X, W)


test_bad_forward_call_after_good_calls_of_every_kind = bad_argument_test(
    FORWARD_CALLS, before=_cache_good_forward_calls, fixtures=("empty_cache",), ids=FORWARD_IDS)
test_bad_backward_call_after_good_calls = bad_argument_test(
    BACKWARD_CALLS, before=_cache_good_backward_call, fixtures=("empty_cache",), ids=BACKWARD_IDS)


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
