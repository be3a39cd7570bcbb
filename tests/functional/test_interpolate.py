"""interpolate / interpolate_backward and nn.Upsample: values against a
per-pixel float64 reference of torch's coordinate rules and hand-computed
cases, gradients by finite differences and as the exact adjoint, torch
peers for every mode (float32 and float64), argument checks."""
import math

import numpy as np
import pytest

import convcore
from convcore import F, nn
from gradcheck import directional_check
from bad_arguments import bad_argument_test


def ref_source(o, in_size, out_size, scale, mode, align_corners):
    """[(input index, weight)] read by output index o along one axis."""
    ratio = 1 / scale if scale is not None else in_size / out_size
    if mode == "nearest":
        if out_size == in_size:
            return [(o, 1.0)]
        if out_size == 2 * in_size:
            return [(o // 2, 1.0)]
        return [(min(math.floor(np.float32(o) * np.float32(ratio)), in_size - 1), 1.0)]
    if mode == "nearest-exact":
        return [(min(math.floor(np.float32(o + 0.5) * np.float32(ratio)), in_size - 1), 1.0)]
    if align_corners:
        src = o * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    else:
        src = max((o + 0.5) * ratio - 0.5, 0.0)
    i0 = min(int(src), in_size - 1)
    lam = min(max(src - i0, 0.0), 1.0)
    return [(i0, 1 - lam), (min(i0 + 1, in_size - 1), lam)]


def ref_interpolate(x, out, scales, mode, align_corners):
    """Each output pixel as the weighted sum of its source pixels, float64."""
    N, C, H, W = x.shape
    y = np.zeros((N, C) + out)
    for i in range(out[0]):
        for j in range(out[1]):
            for hi, hw in ref_source(i, H, out[0], scales[0], mode, align_corners):
                for wi, ww in ref_source(j, W, out[1], scales[1], mode, align_corners):
                    y[:, :, i, j] += hw * ww * x[:, :, hi, wi]
    return y


# (input H, W, keyword arguments, output size, scales the kernel sees)
CASES = [
    (4, 5, dict(size=(7, 3)), (7, 3), (None, None)),
    (3, 3, dict(scale_factor=2), (6, 6), (2.0, 2.0)),
    (5, 4, dict(scale_factor=(1.5, 0.6)), (7, 2), (1.5, 0.6)),
    (5, 4, dict(scale_factor=2.5, recompute_scale_factor=True), (12, 10), (None, None)),
    (1, 1, dict(size=3), (3, 3), (None, None)),
    (6, 2, dict(size=(1, 2)), (1, 2), (None, None)),
]
MODES = [("nearest", None), ("nearest-exact", None), ("bilinear", None), ("bilinear", True)]


@pytest.mark.parametrize("mode, align_corners", MODES)
@pytest.mark.parametrize("case", CASES)
def test_interpolate_matches_reference_and_finite_differences(case, mode, align_corners, rng):
    H, W, kwargs, out, scales = case
    x = rng.standard_normal((2, 3, H, W))
    x_before = x.copy()
    y = F.interpolate(x, mode=mode, align_corners=align_corners, **kwargs)
    assert y.shape == (2, 3) + out and y.dtype == np.float64
    np.testing.assert_allclose(y, ref_interpolate(x, out, scales, mode, bool(align_corners)),
                               rtol=1e-13, atol=1e-14)
    g = rng.standard_normal(y.shape)
    gx = F.interpolate_backward(g, x.shape, mode=mode, align_corners=align_corners, **kwargs)
    directional_check(lambda a: F.interpolate(a, mode=mode, align_corners=align_corners,
                                              **kwargs), [x], [gx], g, rng)
    np.testing.assert_array_equal(x, x_before)


def test_by_hand():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(F.interpolate(x, scale_factor=2)[0, 0],
                                  [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    np.testing.assert_allclose(
        F.interpolate(x, size=(2, 3), mode="bilinear", align_corners=True)[0, 0],
        [[1, 1.5, 2], [3, 3.5, 4]])
    # half-pixel centres: output 0 of 4 sits at input -0.25, clamped to 0;
    # output 1 at 0.25 reads 0.75 * x0 + 0.25 * x1
    np.testing.assert_allclose(
        F.interpolate(x, size=(1, 4), mode="bilinear")[0, 0, 0],
        [2, 2.25, 2.75, 3])
    # the backward of nearest 2x sums each 2x2 block
    np.testing.assert_array_equal(F.interpolate_backward(np.ones((1, 1, 4, 4)), x.shape,
                                                         scale_factor=2), 4 * np.ones_like(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode, align_corners", MODES + [("bilinear", False)])
@pytest.mark.parametrize("case", CASES + [(7, 9, dict(scale_factor=2.0001), None, None),
                                          (8, 6, dict(scale_factor=0.3), None, None)])
def test_interpolate_matches_torch(case, mode, align_corners, dtype, rng):
    torch = pytest.importorskip("torch")
    H, W, kwargs = case[:3]
    x = rng.standard_normal((2, 3, H, W)).astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = torch.nn.functional.interpolate(tx, mode=mode, align_corners=align_corners, **kwargs)
    y = F.interpolate(x, mode=mode, align_corners=align_corners, **kwargs)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(g))
    gx = F.interpolate_backward(g, x.shape, mode=mode, align_corners=align_corners, **kwargs)
    np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)


@pytest.mark.parametrize("make, make_torch", [
    (lambda dt: nn.Upsample(scale_factor=2, dtype=dt), lambda t: t.Upsample(scale_factor=2)),
    (lambda dt: nn.Upsample(size=(5, 3), mode="bilinear", align_corners=True, dtype=dt),
     lambda t: t.Upsample(size=(5, 3), mode="bilinear", align_corners=True)),
    (lambda dt: nn.Upsample(scale_factor=0.5, mode="bilinear", dtype=dt),
     lambda t: t.Upsample(scale_factor=0.5, mode="bilinear")),
])
def test_upsample_module(make, make_torch, rng):
    layer = make(np.float64)
    x = rng.standard_normal((2, 3, 4, 6))
    y = layer(x)
    assert layer.output_shape(x.shape) == y.shape
    g = rng.standard_normal(y.shape)
    gx = layer.backward(g)
    with convcore.no_grad():
        layer(x)
    assert layer._cache is None
    torch = pytest.importorskip("torch")
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = make_torch(torch.nn)(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-13, atol=1e-14)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-13, atol=1e-14)


X = np.zeros((1, 2, 3, 3))

test_bad_arguments = bad_argument_test([
    (F.interpolate, (X,), {}, ValueError, "give exactly one of size and scale_factor"),
    (F.interpolate, (X,), {"size": 2, "scale_factor": 2}, ValueError,
     "give exactly one of size and scale_factor"),
    (F.interpolate, (X,), {"size": 2, "mode": "bicubic"}, ValueError, "mode must be one of"),
    (F.interpolate, (X,), {"size": 2, "align_corners": True}, ValueError,
     "align_corners can only be set with mode='bilinear'"),
    (F.interpolate, (X,), {"size": 2, "mode": "bilinear", "align_corners": 1}, TypeError,
     "align_corners must be a bool or None"),
    (F.interpolate, (X,), {"size": 0}, ValueError, "size must be >= 1"),
    (F.interpolate, (X,), {"size": (2, 3, 4)}, ValueError, "size must be a number or a pair"),
    (F.interpolate, (X,), {"scale_factor": -1.0}, ValueError,
     "scale_factor must be a finite number > 0"),
    (F.interpolate, (X,), {"scale_factor": 0.2}, ValueError,
     "gives an empty output 0x0 for input shape (1, 2, 3, 3)"),
    (F.interpolate, (X[0],), {"size": 2}, ValueError, "input must be 4-D"),
    (F.interpolate_backward, (np.zeros((1, 2, 4, 4)), X.shape), {"size": 5}, ValueError,
     "grad_y has shape (1, 2, 4, 4) but interpolating input shape (1, 2, 3, 3) gives"),
    (lambda: nn.Upsample(scale_factor=2, mode="linear"), ValueError, "mode must be one of"),
])
