"""IDX (MNIST/Fashion-MNIST) and CIFAR-10 binary readers: tiny synthetic
files written byte by byte into tmp_path, read back, and corrupted."""
import gzip
import os
import struct

import numpy as np
import pytest

from convcore.data import (load_cifar10, load_dataset, load_fashion_mnist, load_mnist,
                           read_cifar_batch, read_idx, write_cifar_batch, write_idx)


def idx_bytes(array, code=0x08):
    """An IDX file built by hand from the format description (independent of write_idx)."""
    head = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, data, gz=False):
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if gz else data)
    return str(path)


@pytest.fixture
def mnist_dir(tmp_path, rng):
    """4 files, mixed raw and gz: 5 train and 3 test 4x3 images."""
    sets = {"train": 5, "t10k": 3}
    out = {}
    for prefix, n in sets.items():
        imgs = rng.integers(0, 256, (n, 4, 3), dtype=np.uint8)
        lbls = rng.integers(0, 10, n).astype(np.uint8)
        write(tmp_path / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(imgs), gz=True)
        write(tmp_path / f"{prefix}-labels-idx1-ubyte", idx_bytes(lbls))
        out[prefix] = (imgs, lbls)
    return tmp_path, out


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                        (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)])
def test_read_idx_every_dtype(tmp_path, rng, gz, dtype, code):
    a = (rng.standard_normal((3, 2, 5)) * 100).astype(dtype)
    p = write(tmp_path / "a.idx", idx_bytes(a, code), gz)
    got = read_idx(p)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, a)


def test_write_idx_roundtrip_matches_hand_made_bytes(tmp_path, rng):
    a = rng.integers(0, 256, (2, 3, 4), dtype=np.uint8)
    write_idx(tmp_path / "w.idx", a)
    assert (tmp_path / "w.idx").read_bytes() == idx_bytes(a)
    write_idx(tmp_path / "w.idx.gz", a)
    assert gzip.decompress((tmp_path / "w.idx.gz").read_bytes()) == idx_bytes(a)


def test_load_mnist_values(mnist_dir):
    d, raw = mnist_dir
    train, test = load_mnist(d)
    assert train.images.shape == (5, 1, 4, 3) and train.images.dtype == np.float32
    assert test.labels.dtype == np.int64 and len(test) == 3
    np.testing.assert_array_equal(train.images[:, 0] * 255, raw["train"][0].astype(np.float32))
    np.testing.assert_array_equal(test.labels, raw["t10k"][1])
    assert train.classes[3] == "3"
    assert load_fashion_mnist(d)[0].classes[9] == "Ankle boot"
    assert not train.images.flags.writeable


def test_load_mnist_torchvision_layout_and_dotted_names(tmp_path, rng):
    sub = tmp_path / "MNIST" / "raw"
    sub.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        write(sub / f"{prefix}-images.idx3-ubyte", idx_bytes(np.zeros((2, 2, 2), np.uint8)))
        write(sub / f"{prefix}-labels.idx1-ubyte", idx_bytes(np.array([1, 2], np.uint8)))
    train, _ = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(train.labels, [1, 2])


def test_missing_files_name_what_was_looked_for(tmp_path, mnist_dir):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path / "nowhere")
    d, _ = mnist_dir
    os.remove(d / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        load_mnist(d)


def corrupt_cases(imgs):
    good = idx_bytes(imgs)
    return {
        "bad magic": (b"\x08\x03" + good[2:], "magic"),
        "unknown dtype code": (good[:2] + b"\x07" + good[3:], "data type code"),
        "zero ndim": (good[:3] + b"\x00" + good[4:], "dimensions"),
        "truncated header": (good[:6], "truncated IDX header"),
        "too short": (good[:2], "too short"),
        "truncated data": (good[:-5], "truncated"),
        "trailing bytes": (good + b"\x00", "more than"),
        "huge declared shape": (good[:4] + struct.pack(">III", 2**31, 2**31, 2**31) + good[16:],
                                "limit"),
    }


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", list(corrupt_cases(np.zeros((2, 3, 3), np.uint8))))
def test_corrupt_idx_raises_naming_file(tmp_path, rng, case, gz):
    imgs = rng.integers(0, 256, (2, 3, 3), dtype=np.uint8)
    data, fragment = corrupt_cases(imgs)[case]
    p = write(tmp_path / "bad-idx3-ubyte", data, gz)
    with pytest.raises(ValueError, match=fragment) as e:
        read_idx(p)
    assert p in str(e.value)


def test_corrupt_gzip_stream(tmp_path, rng):
    good = gzip.compress(idx_bytes(np.zeros((4, 5, 5), np.uint8)))
    p = write(tmp_path / "x.gz", good[:len(good) // 2])
    with pytest.raises(ValueError, match="gzip") as e:
        read_idx(p)
    assert p in str(e.value)


@pytest.mark.parametrize("problem,fragment,culprit", [
    ("count mismatch", "3 labels", "train-images"),
    ("label out of range", "out of range", "train-labels"),
    ("labels not 1-D", "labels of shape", "train-labels"),
    ("images float", "uint8 images", "train-images"),
])
def test_mnist_semantic_checks(mnist_dir, problem, fragment, culprit):
    d, raw = mnist_dir
    imgs, lbls = raw["train"]
    if problem == "count mismatch":
        write(d / "train-labels-idx1-ubyte", idx_bytes(lbls[:3]))
    elif problem == "label out of range":
        write(d / "train-labels-idx1-ubyte", idx_bytes(np.r_[lbls[:4], 10].astype(np.uint8)))
    elif problem == "labels not 1-D":
        write(d / "train-labels-idx1-ubyte", idx_bytes(lbls.reshape(5, 1)))
    else:
        write(d / "train-images-idx3-ubyte.gz", idx_bytes(imgs.astype(np.float32), 0x0D), gz=True)
    with pytest.raises(ValueError, match=fragment) as e:
        load_mnist(d)
    assert culprit in str(e.value)


def cifar_records(rng, n):
    imgs = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    lbls = rng.integers(0, 10, n).astype(np.uint8)
    # Layout by hand: label byte, then R plane, G plane, B plane (row-major).
    data = b"".join(bytes([lbls[i]]) + imgs[i].tobytes() for i in range(n))
    return imgs, lbls, data


@pytest.fixture
def cifar_dir(tmp_path, rng):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    parts = []
    for i in range(1, 6):
        imgs, lbls, data = cifar_records(rng, i)  # 1..5 records: sizes differ per file
        write(d / f"data_batch_{i}.bin", data)
        parts.append((imgs, lbls))
    imgs, lbls, data = cifar_records(rng, 2)
    write(d / "test_batch.bin", data)
    return tmp_path, parts, (imgs, lbls)


def test_load_cifar10_values(cifar_dir):
    root, parts, (timgs, tlbls) = cifar_dir
    train, test = load_cifar10(root)            # finds the cifar-10-batches-bin subdirectory
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == np.float32
    np.testing.assert_array_equal(train.images * 255, np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(train.labels, np.concatenate([p[1] for p in parts]))
    np.testing.assert_array_equal(test.labels, tlbls)
    assert test.labels.dtype == np.int64 and train.classes[0] == "airplane"


def test_write_cifar_batch_roundtrip(tmp_path, rng):
    imgs, lbls, data = cifar_records(rng, 3)
    write_cifar_batch(tmp_path / "b.bin", imgs, lbls)
    assert (tmp_path / "b.bin").read_bytes() == data
    got_i, got_l = read_cifar_batch(tmp_path / "b.bin")
    np.testing.assert_array_equal(got_i, imgs)
    np.testing.assert_array_equal(got_l, lbls)


@pytest.mark.parametrize("edit,fragment", [
    (lambda d: d[:-1], "whole number of CIFAR-10 records"),
    (lambda d: d + b"\x00" * 10, "whole number of CIFAR-10 records"),
    (lambda d: b"", "0 bytes"),
    (lambda d: bytes([10]) + d[1:], "label 10"),
    (lambda d: d[:3073] + bytes([255]) + d[3074:], "record 1 has label 255"),
])
def test_corrupt_cifar_raises_naming_file(tmp_path, rng, edit, fragment):
    _, _, data = cifar_records(rng, 2)
    p = write(tmp_path / "data_batch_1.bin", edit(data))
    with pytest.raises(ValueError, match=fragment) as e:
        read_cifar_batch(p)
    assert p in str(e.value)


def test_cifar_missing_file(cifar_dir):
    root, _, _ = cifar_dir
    os.remove(root / "cifar-10-batches-bin" / "data_batch_4.bin")
    with pytest.raises(FileNotFoundError, match="data_batch_4.bin"):
        load_cifar10(root / "cifar-10-batches-bin")
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin"):
        load_cifar10(root / "absent")


def test_load_dataset_arguments():
    with pytest.raises(ValueError, match="unknown data set 'svhn'"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("cifar10")


def test_max_bytes_refuses_before_reading(tmp_path):
    p = write(tmp_path / "big.idx.gz", idx_bytes(np.zeros((100, 10, 10), np.uint8)), gz=True)
    assert read_idx(p).shape == (100, 10, 10)
    with pytest.raises(ValueError, match="10000 bytes, over the 9999-byte limit"):
        read_idx(p, max_bytes=9999)


def test_array_dataset_validation():
    from convcore.data import ArrayDataset
    x = np.zeros((3, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="4-D"):
        ArrayDataset(x[0], np.zeros(3, np.int64), ("a", "b"))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ArrayDataset(x, np.zeros(2, np.int64), ("a", "b"))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        ArrayDataset(x, np.array([0, 1, 2]), ("a", "b"))
    ds = ArrayDataset(x, np.array([0, 1, 1]), ("a", "b"))
    np.testing.assert_array_equal(ds.class_counts(), [1, 2])
    assert ds.subset([2]).labels.tolist() == [1] and ds.image_shape == (1, 2, 2)


@pytest.mark.parametrize("gz", [False, True])
def test_random_corruption_gives_valueerror_or_valid_data(tmp_path, gz):
    """Seeded fuzzing: flipped bytes, truncations and extensions of a valid
    IDX file either still parse to an array of the declared shape or raise
    ValueError naming the file; nothing else escapes."""
    r = np.random.default_rng(99)
    good = idx_bytes(r.integers(0, 256, (3, 4, 4), dtype=np.uint8))
    p = str(tmp_path / "fuzz-idx3-ubyte")
    for trial in range(150):
        data = bytearray(good)
        kind = trial % 3
        if kind == 0:
            for i in r.integers(0, len(data), r.integers(1, 4)):
                data[i] = int(r.integers(0, 256))
        elif kind == 1:
            data = data[:int(r.integers(0, len(data)))]
        else:
            data += bytes(r.integers(0, 256, int(r.integers(1, 20)), dtype=np.uint8))
        write(p, bytes(data), gz)
        try:
            a = read_idx(p)
        except ValueError as e:
            assert p in str(e)
        else:
            assert a.size * a.itemsize + 4 + 4 * a.ndim == len(data)
