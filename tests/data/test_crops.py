"""Random crops, centre crop and multi-crop evaluation views."""
import numpy as np
import pytest

from convcore.data import RandomCrop, center_crop, crop, multi_crop


def grid(n=2, c=2, h=5, w=6):
    return np.arange(n * c * h * w, dtype=np.float32).reshape(n, c, h, w)


def test_crop_windows():
    x = grid()
    out = crop(x, [0, 2], [1, 3], (3, 2))
    np.testing.assert_array_equal(out[0], x[0, :, 0:3, 1:3])
    np.testing.assert_array_equal(out[1], x[1, :, 2:5, 3:5])
    with pytest.raises(ValueError, match="leaves images"):
        crop(x, [0, 3], [0, 0], (3, 2))


def test_random_crop_with_padding_is_a_window_of_the_padded_image():
    x = grid()
    t = RandomCrop((4, 4), padding=1)
    out = t.apply(x, np.array([[0, 0], [2, 3]]))
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    np.testing.assert_array_equal(out[0], padded[0, :, 0:4, 0:4])
    np.testing.assert_array_equal(out[1], padded[1, :, 2:6, 3:7])
    r = t(x, np.random.default_rng(0))
    assert r.shape == (2, 2, 4, 4) and r.dtype == np.float32
    offs = t.sample(400, np.random.default_rng(0), (5, 6))
    assert offs[:, 0].max() == 3 and offs[:, 1].max() == 4 and offs.min() == 0
    with pytest.raises(ValueError, match="does not fit"):
        RandomCrop(8)(x, np.random.default_rng(0))


def test_center_and_multi_crop():
    x = grid(h=5, w=6)
    c = center_crop(x, 3)
    np.testing.assert_array_equal(c, x[:, :, 1:4, 2:5])   # offsets round((5-3)/2), round(3/2)=2
    views = multi_crop(x, (3, 4))
    assert views.shape == (10, 2, 2, 3, 4)
    np.testing.assert_array_equal(views[0], x[:, :, :3, :4])        # top-left
    np.testing.assert_array_equal(views[1], x[:, :, :3, 2:])        # top-right
    np.testing.assert_array_equal(views[2], x[:, :, 2:, :4])        # bottom-left
    np.testing.assert_array_equal(views[3], x[:, :, 2:, 2:])        # bottom-right
    np.testing.assert_array_equal(views[4], center_crop(x, (3, 4)))
    np.testing.assert_array_equal(views[5], x[..., ::-1][:, :, :3, :4])
    assert multi_crop(x, 2, flips=False).shape == (5, 2, 2, 2, 2)


def test_multi_crop_matches_torchvision():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    torch = pytest.importorskip("torch")
    x = grid(n=1, c=3, h=7, w=8)
    want = tvf.ten_crop(torch.from_numpy(x), [4, 5])
    got = multi_crop(x, (4, 5))
    for i in range(10):
        np.testing.assert_array_equal(got[i], want[i].numpy())
