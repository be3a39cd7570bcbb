"""Finite-difference checks of conv2d_backward (float64, tiny shapes): the
gradients must be the derivative of the forward, independently of the
NumPy reference the grid tests use."""
import pytest

import convcore
from convcore import F
from gradcheck import check_conv2d_gradients, directional_check

CASES = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=1),
    dict(stride=1, padding="same", dilation=2, groups=1),
    dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2), groups=2),
    dict(stride=1, padding=1, dilation=1, groups=4),  # depthwise
    dict(stride=3, padding=2, dilation=3, groups=1),
]


GENERAL = [a for a in convcore.conv_algorithms() if a != "winograd"]
# Winograd's domain: 3x3, stride 1, any padding (past 2 backward-data runs
# with negative padding) and dilation: F(4x4) undilated, F(2x2) dilated.
WINOGRAD_CASES = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=1, padding=3, dilation=1, groups=1),
    dict(stride=1, padding=(2, 1), dilation=1, groups=2),
    dict(stride=1, padding="same", dilation=1, groups=4),
    dict(stride=1, padding=2, dilation=2, groups=1),
    dict(stride=1, padding=(3, 0), dilation=(1, 2), groups=2),
    dict(stride=1, padding="same", dilation=3, groups=1),
]


def _cases():
    for algo in GENERAL:
        for geom in CASES:
            yield algo, geom, (3, 2)
    for geom in WINOGRAD_CASES:
        yield "winograd", geom, (3, 3)


@pytest.mark.parametrize("algo,geom,kernel", list(_cases()), ids=str)
def test_gradients_match_finite_differences(algo, geom, kernel, rng):
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((4, 4 // geom["groups"]) + kernel)
    b = rng.standard_normal(4)
    check_conv2d_gradients(x, w, b, geom, algo, rng)


def test_gradcheck_detects_a_wrong_gradient(rng):
    """The checker itself can fail: a gradient off by a factor must be caught."""
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    y = F.conv2d(x, w)
    upstream = rng.standard_normal(y.shape)
    gx, gw, _ = F.conv2d_backward(upstream, x, w, bias=False)
    with pytest.raises(AssertionError):
        directional_check(lambda x, w: F.conv2d(x, w), (x, w), (gx * 1.01, gw), upstream, rng)
