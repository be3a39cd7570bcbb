"""Image layouts in the data layer: ArrayDataset refuses evidently
channels-last images unless told their layout and converts them when
told; DataLoader yields either layout; the CIFAR-10 files are read and
written as colour planes, in either layout on the caller's side; MNIST
and the digits come out (N, 1, H, W)."""
import numpy as np
import pytest

from convcore import nn
from convcore.data import (ArrayDataset, DataLoader, RandomHorizontalFlip, load_digits,
                           load_mnist, read_cifar_batch, write_cifar_batch, write_idx)

CLASSES = ("a", "b", "c")


def images(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def labels(n):
    return (np.arange(n) % 3).astype(np.int64)


@pytest.mark.parametrize("shape", [(6, 32, 32, 3), (6, 8, 8, 1), (6, 28, 20, 4)])
def test_evident_channels_last_images_are_refused(shape):
    x = images(shape)
    with pytest.raises(ValueError) as info:
        ArrayDataset(x, labels(6), CLASSES, "pics")
    message = str(info.value)
    assert f"ArrayDataset(pics): images of shape {shape} look channels-last" in message
    assert "data_format='channels_last'" in message and "data_format='channels_first'" in message


@pytest.mark.parametrize("data_format", ["channels_last", "NHWC"])
def test_channels_last_images_are_converted(data_format):
    x = images((6, 9, 7, 3))
    kept = x.copy()
    ds = ArrayDataset(x, labels(6), CLASSES, data_format=data_format)
    assert ds.image_shape == (3, 9, 7) and ds.images.flags.c_contiguous
    np.testing.assert_array_equal(ds.images, x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(ds.images[2, 1], x[2, :, :, 1])   # channel 1, one plane
    np.testing.assert_array_equal(x, kept)                           # the caller's array
    with pytest.raises(ValueError):
        ds.images[0, 0, 0, 0] = 1.0                                  # still read-only
    sub = ds.subset([1, 4])                                          # already channels-first
    np.testing.assert_array_equal(sub.images, ds.images[[1, 4]])


@pytest.mark.parametrize("shape", [(6, 3, 32, 3), (6, 2, 3, 4), (6, 3, 32, 32), (6, 1, 8, 8)])
def test_channels_first_and_ambiguous_images_are_kept(shape):
    """Shapes that are channels-first, or could be, are held as given."""
    x = images(shape)
    ds = ArrayDataset(x, labels(6), CLASSES)
    assert ds.images.shape == shape
    np.testing.assert_array_equal(ds.images, x)


def test_explicit_channels_first_accepts_any_shape():
    x = images((6, 32, 32, 3))    # 32 channels of 32x3 images, as the caller says
    ds = ArrayDataset(x, labels(6), CLASSES, data_format="channels_first")
    assert ds.image_shape == (32, 32, 3)


def test_bad_data_format():
    with pytest.raises(ValueError, match="data_format must be 'channels_first'"):
        ArrayDataset(images((2, 3, 4, 4)), labels(2), CLASSES, data_format="HWC")
    with pytest.raises(ValueError, match="DataLoader: data_format must be"):
        DataLoader((images((2, 3, 4, 4)), labels(2)), data_format="chw")


def test_loader_yields_channels_last_batches():
    x = images((10, 3, 5, 4))
    ds = ArrayDataset(x, labels(10), CLASSES)
    flip = RandomHorizontalFlip(0.5)
    first = list(DataLoader(ds, 4, shuffle=True, seed=3, transform=flip))
    last = list(DataLoader(ds, 4, shuffle=True, seed=3, transform=flip,
                           data_format="channels_last"))
    assert len(first) == len(last) == 3
    for (xf, yf), (xl, yl) in zip(first, last):
        assert xl.shape == (len(yf), 5, 4, 3)
        # the same images, flipped alike (augmentation runs channels-first)
        np.testing.assert_array_equal(xl, xf.transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(yl, yf)


def test_channels_last_loader_feeds_a_channels_last_model():
    ds = ArrayDataset(images((4, 6, 6, 3)), labels(4), CLASSES, data_format="channels_last")
    conv_last = nn.Conv2d(3, 2, 3, rng=0, data_format="channels_last")
    conv_first = nn.Conv2d(3, 2, 3, rng=0)
    (x_last, _), = DataLoader(ds, 4, data_format="channels_last")
    (x_first, _), = DataLoader(ds, 4)
    np.testing.assert_array_equal(conv_last(x_last), conv_first(x_first).transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="looks like channels-first"):
        conv_last(x_first)


def cifar_file(tmp_path, n=2):
    """A batch written byte by byte: label, then the red, green and blue
    planes, each with its own constant offset so planes are told apart."""
    rng = np.random.default_rng(1)
    planes = rng.integers(0, 80, (n, 3, 32, 32)) + np.array([0, 80, 160])[None, :, None, None]
    planes = planes.astype(np.uint8)
    lbls = np.arange(n, dtype=np.uint8)
    data = b"".join(bytes([lbls[i]]) + planes[i].tobytes() for i in range(n))
    path = tmp_path / "batch.bin"
    path.write_bytes(data)
    return path, planes, lbls, data


def test_cifar_reader_layouts(tmp_path):
    path, planes, lbls, _ = cifar_file(tmp_path)
    first, lf = read_cifar_batch(path)
    last, ll = read_cifar_batch(path, data_format="channels_last")
    assert first.shape == (2, 3, 32, 32) and last.shape == (2, 32, 32, 3)
    assert last.flags.c_contiguous
    np.testing.assert_array_equal(first, planes)
    assert first[:, 0].max() < 80 <= first[:, 1].min() and first[:, 2].min() >= 160  # R, G, B
    np.testing.assert_array_equal(last[..., 0], planes[:, 0])   # red is the last axis' first
    np.testing.assert_array_equal(lf, lbls)
    np.testing.assert_array_equal(ll, lbls)


def test_cifar_writer_refuses_the_other_layout(tmp_path):
    path, planes, lbls, data = cifar_file(tmp_path)
    hwc = np.ascontiguousarray(planes.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"images must have shape \(2, 3, 32, 32\)"):
        write_cifar_batch(tmp_path / "w.bin", hwc, lbls)       # would be scrambled
    write_cifar_batch(tmp_path / "w.bin", hwc, lbls, data_format="channels_last")
    assert (tmp_path / "w.bin").read_bytes() == data
    with pytest.raises(ValueError, match=r"images must have shape \(2, 32, 32, 3\)"):
        write_cifar_batch(tmp_path / "x.bin", planes, lbls, data_format="channels_last")


def test_mnist_and_digits_are_one_channel_first(tmp_path):
    rng = np.random.default_rng(2)
    for prefix, n in (("train", 4), ("t10k", 2)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 5, 6))
                  .astype(np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8))
    train, test = load_mnist(tmp_path)
    assert train.images.shape == (4, 1, 5, 6) and test.images.shape == (2, 1, 5, 6)
    digits, _ = load_digits()
    assert digits.image_shape == (1, 8, 8)
