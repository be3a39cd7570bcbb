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
    # column stride 2 has its own vectorised rows (gather and scatter-add)
    dict(R=3, S=3, stride=(2, 2), padding=(1, 1), dilation=(1, 1)),
    dict(R=1, S=1, stride=(2, 2), padding=(0, 0), dilation=(1, 1)),
    dict(R=7, S=7, stride=(2, 2), padding=(3, 3), dilation=(1, 1)),
    dict(R=3, S=2, stride=(1, 2), padding=(2, 0), dilation=(1, 2)),
    dict(R=2, S=3, stride=(3, 2), padding=(0, 4), dilation=(1, 3)),
])
def test_col2im_is_the_adjoint_of_im2col(geom, rng):
    C, H, W = 3, 9, 37   # rows long enough for the vectorised copies
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


@pytest.mark.parametrize("xs,ws,geom,expect", [
    # 2 images, 2 threads: a column per thread, 15 rows of 112 outputs
    # (147 x 1680 within the 2**18-element budget)
    ((2, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3), 2 * 147 * 15 * 112),
    ((2, 16, 9, 9), (8, 16, 3, 3), dict(padding=1), 2 * 144 * 81),   # one stripe
    # 1 image: a column per thread for stripes of 5 rows of 20 (8 rows
    # within the 2**22 budget, one row alone is 501760 elements; 4 stripes
    # for the 2 threads)
    ((1, 512, 20, 20), (4, 512, 7, 7), dict(padding=3), 2 * 512 * 49 * 5 * 20),
    # ... and one buffer for GEMMs split over the threads, where the output
    # has fewer pixels than channels
    ((1, 512, 3, 3), (16, 512, 3, 3), dict(padding=1), 512 * 9 * 3 * 3),
    ((2, 8, 5, 5), (8, 8, 1, 1), {}, 0),                            # pointwise: none
])
def test_forward_scratch_is_the_kernels_column(xs, ws, geom, expect):
    """conv_gemm.scratch_bytes, which the memory check uses, counts the
    column buffers its forward allocates (float32, 2 threads, whole GEMMs)."""
    from convcore._kernels import conv_gemm
    from convcore.functional._conv_spec import conv_spec
    spec = conv_spec(xs, ws, np.dtype(np.float32), geom.get("stride", 1),
                     geom.get("padding", 0), 1, 1)
    assert conv_gemm.scratch_bytes(spec.params, 2, False, 4) == expect * 4
