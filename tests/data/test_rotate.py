"""rotate() on scipy.ndimage.rotate keeps its semantics: counter-clockwise
about the centre, `fill` outside the image and as an interpolation
neighbour, nearest rounding, dtype and shape kept, input untouched."""
import numpy as np
import pytest

from convcore.data import rotate


def reference(image, angle, interpolation, fill):
    """A loop over output pixels of one (H, W) image, float64: inverse
    mapping of the output point rotated back by -angle (y axis down)."""
    h, w = image.shape
    t = np.deg2rad(angle)
    cy, cx = (h - 1) / 2, (w - 1) / 2

    def pixel(yy, xx):
        return image[yy, xx] if 0 <= yy < h and 0 <= xx < w else fill

    out = np.empty((h, w))
    for i in range(h):
        for j in range(w):
            sy = cy + np.sin(t) * (j - cx) + np.cos(t) * (i - cy)
            sx = cx + np.cos(t) * (j - cx) - np.sin(t) * (i - cy)
            if interpolation == "nearest":
                out[i, j] = pixel(int(np.floor(sy + 0.5)), int(np.floor(sx + 0.5)))
                continue
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            fy, fx = sy - y0, sx - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * pixel(y0, x0) + fx * pixel(y0, x0 + 1))
                         + fy * ((1 - fx) * pixel(y0 + 1, x0) + fx * pixel(y0 + 1, x0 + 1)))
    return out


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill", [0.0, 0.7])
def test_against_reference_loop(interpolation, fill):
    rng = np.random.default_rng(3)
    x = rng.random((4, 2, 5, 7))
    angles = np.array([30.0, -75.0, 123.0, 200.0])
    out = rotate(x, angles, interpolation, fill)
    for i in range(4):
        for c in range(2):
            np.testing.assert_allclose(out[i, c], reference(x[i, c], angles[i], interpolation,
                                                            fill), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_shape_and_input_kept_on_a_non_contiguous_batch(dtype):
    base = np.random.default_rng(4).random((3, 6, 6, 2)).astype(dtype)
    x = base.transpose(0, 3, 1, 2)           # (3, 2, 6, 6), not C-contiguous
    before = x.copy()
    out = rotate(x, [10, 20, 30])
    assert out.dtype == dtype and out.shape == x.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(out, rotate(np.ascontiguousarray(x), [10, 20, 30]), rtol=1e-6)


def test_one_pixel_and_batch_of_one():
    x = np.full((1, 1, 1, 1), 0.25, np.float32)
    np.testing.assert_array_equal(rotate(x, [37.0]), x)


def test_bad_arguments():
    x = np.zeros((2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"one angle per image \(2\), got shape \(3,\)"):
        rotate(x, [1, 2, 3])
    with pytest.raises(ValueError, match="interpolation must be 'bilinear' or 'nearest'"):
        rotate(x, [1, 2], "cubic")
