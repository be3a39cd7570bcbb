"""CIFAR-10, binary version (cifar-10-binary.tar.gz, extracted).

Each batch file is a plain sequence of records: 1 label byte (0..9) then
3,072 pixel bytes (1,024 red, 1,024 green, 1,024 blue, each 32x32
row-major), so a record reshapes straight to (3, 32, 32): NCHW with no
transpose. The Python version's pickles are never read: unpickling a file
runs whatever code it names."""
from __future__ import annotations

import os
from typing import Tuple

import numpy as np

from convcore.data._files import find_file, read_bytes
from convcore.data.dataset import ArrayDataset
from convcore.utils.layout import (
    CHANNELS_FIRST, check_data_format, from_channels_first, shape_from_channels_first,
    to_channels_first)
from convcore.utils.types import Array, PathLike

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
_SUBDIRS = ("", "cifar-10-batches-bin")
_MAX_FILE_BYTES = 1 << 28  # a real batch is 30,730,000 bytes; refuse gzip bombs


def read_cifar_batch(path: PathLike, num_classes: int = 10,
                     data_format: str = CHANNELS_FIRST) -> Tuple[Array, Array]:
    """(images uint8 (N, 3, 32, 32), labels uint8 (N,)) from one binary batch;
    images (N, 32, 32, 3) (C-contiguous) with data_format="channels_last",
    as image libraries take them. The file length must be a positive
    multiple of 3,073 bytes and every label below `num_classes`; otherwise
    ValueError naming the file."""
    data_format = check_data_format(data_format, "read_cifar_batch")
    path = os.fspath(path)
    raw = read_bytes(path, limit=_MAX_FILE_BYTES)
    if len(raw) > _MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {_MAX_FILE_BYTES} bytes; not a CIFAR-10 batch")
    if len(raw) == 0 or len(raw) % RECORD_BYTES:
        raise ValueError(
            f"{path}: {len(raw)} bytes is not a whole number of CIFAR-10 records "
            f"({RECORD_BYTES} bytes each: 1 label + 3x32x32 pixels); truncated or not CIFAR-10 binary")
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].copy()
    if labels.max() >= num_classes:
        bad = int(np.flatnonzero(labels >= num_classes)[0])
        raise ValueError(f"{path}: record {bad} has label {int(labels[bad])}, outside "
                         f"[0, {num_classes}); not a CIFAR-10 binary batch")
    images = records[:, 1:].reshape(-1, *IMAGE_SHAPE)
    return np.ascontiguousarray(from_channels_first(images, data_format)), labels


def _read_class_names(directory):
    """batches.meta.txt (one name per line) when present and sane."""
    path = os.path.join(directory, "batches.meta.txt")
    if not os.path.isfile(path):
        return CIFAR10_CLASSES
    with open(path, "rb") as f:
        names = [ln.strip().decode("ascii", "replace") for ln in f.read(4096).splitlines()]
    names = [n for n in names if n]
    return tuple(names) if len(names) == 10 else CIFAR10_CLASSES


def load_cifar10(data_dir: PathLike) -> Tuple[ArrayDataset, ArrayDataset]:
    """(train, test) ArrayDatasets from data_batch_1..5.bin and test_batch.bin
    in `data_dir` (or its cifar-10-batches-bin subdirectory): float32
    (N, 3, 32, 32) in [0, 1] (pixel / 255), int64 labels."""
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"load_cifar10: data directory {data_dir!r} does not exist; it should hold "
            f"{', '.join(TRAIN_FILES)} and {TEST_FILE} (the CIFAR-10 binary version)")
    d = data_dir
    for sub in _SUBDIRS:
        if os.path.isfile(os.path.join(data_dir, sub, TEST_FILE)):
            d = os.path.join(data_dir, sub)
            break
    train_paths = [find_file(d, (n,), "load_cifar10") for n in TRAIN_FILES]
    test_path = find_file(d, (TEST_FILE,), "load_cifar10")
    classes = _read_class_names(d)

    def to_dataset(paths, name):
        parts = [read_cifar_batch(p, len(classes)) for p in paths]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
        x = images.astype(np.float32)
        x /= np.float32(255)
        return ArrayDataset(x, labels, classes, name, {"files": list(paths)})

    return to_dataset(train_paths, "cifar10-train"), to_dataset([test_path], "cifar10-test")


def write_cifar_batch(path: PathLike, images: Array, labels: Array,
                      data_format: str = CHANNELS_FIRST) -> PathLike:
    """Write uint8 images (N, 3, 32, 32), or (N, 32, 32, 3) with
    data_format="channels_last", and labels (N,) as one binary batch (the
    inverse of read_cifar_batch; for fixtures and exports). Images of any
    other shape are refused: the file stores colour planes, so images of
    the other layout would be written scrambled."""
    fn = "write_cifar_batch"
    data_format = check_data_format(data_format, fn)
    images = np.asarray(images, np.uint8)
    expected = shape_from_channels_first((len(labels),) + IMAGE_SHAPE, data_format)
    if images.shape != expected:
        raise ValueError(f"{fn}: images must have shape {expected} for {len(labels)} "
                         f"labels and data_format={data_format!r}, got {images.shape}")
    images = to_channels_first(images, data_format).reshape(len(labels), -1)
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None], images], axis=1)
    with open(os.fspath(path), "wb") as f:
        f.write(records.tobytes())
    return path
