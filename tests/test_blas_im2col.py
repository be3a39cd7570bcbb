"""The building blocks: the row-major GEMM wrapper over scipy's BLAS for
every transpose pair, and im2col/col2im being exact adjoints."""
import numpy as np
import pytest

from convcore._kernels.blas import gemm_py
from convcore._kernels.im2col import col2im_py, im2col_py

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_matches_numpy(ta, tb, dtype, rng):
    m, n, k = 7, 5, 11
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    expect = 1.5 * (a.T if ta else a) @ (b.T if tb else b) + 0.5 * c
    gemm_py(ta, tb, 1.5, a, b, 0.5, c)
    np.testing.assert_allclose(c, expect, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("geom", [
    dict(R=3, S=3, stride=(1, 1), padding=(1, 1), dilation=(1, 1)),
    dict(R=2, S=5, stride=(2, 3), padding=(0, 2), dilation=(2, 1)),
    dict(R=4, S=1, stride=(1, 1), padding=(3, 0), dilation=(3, 1)),
])
def test_col2im_is_the_adjoint_of_im2col(geom, rng):
    C, H, W = 3, 9, 8
    R, S, (sh, sw), (ph, pw), (dh, dw) = geom["R"], geom["S"], geom["stride"], geom["padding"], geom["dilation"]
    OH = (H + 2 * ph - dh * (R - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (S - 1) - 1) // sw + 1
    x = rng.standard_normal((C, H, W))
    col = np.full((C * R * S, OH * OW), np.nan)  # every entry must be written
    im2col_py(x, col, R, S, OH, OW, (sh, sw), (ph, pw), (dh, dw))
    assert np.isfinite(col).all()
    # Entry by entry against the definition.
    for c in range(C):
        for r in range(R):
            for s in range(S):
                for oh in range(OH):
                    for ow in range(OW):
                        ih, iw = oh * sh - ph + r * dh, ow * sw - pw + s * dw
                        v = x[c, ih, iw] if 0 <= ih < H and 0 <= iw < W else 0.0
                        assert col[(c * R + r) * S + s, oh * OW + ow] == v
    # <im2col(x), z> == <x, col2im(z)>
    z = rng.standard_normal(col.shape)
    back = np.zeros_like(x)
    col2im_py(z, back, R, S, OH, OW, (sh, sw), (ph, pw), (dh, dw))
    np.testing.assert_allclose(np.sum(col * z), np.sum(x * back), rtol=1e-12)
