"""MNIST and Fashion-MNIST from their IDX files (raw or .gz).

IDX layout (LeCun's page): a 4-byte magic 0x00 0x00 <dtype code> <ndim>,
then ndim big-endian uint32 sizes, then the data, big-endian, row-major.
MNIST images are code 0x08 (uint8), 3-D (N, 28, 28); labels 0x08, 1-D (N,).
Everything is checked against the file's real length before use; any
mismatch raises ValueError naming the file."""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from convcore.data._files import find_file, read_bytes
from convcore.data.dataset import ArrayDataset
from convcore.utils.types import Array, PathLike

# IDX data type codes -> big-endian NumPy dtypes.
IDX_DTYPES: Dict[int, np.dtype] = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_MAX_NDIM = 8

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                   "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))

# (train images, train labels, test images, test labels); both the canonical
# "-idx3-ubyte" names and the dotted ".idx3-ubyte" variant some mirrors use.
_MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
# Subdirectories tried under the user's directory (torchvision's layout too).
_SUBDIRS = {"mnist": ("", "MNIST/raw", "mnist"),
            "fashion-mnist": ("", "FashionMNIST/raw", "fashion-mnist", "fashion")}


def parse_idx_header(head, path):
    """(dtype, shape, header_length) from the first bytes of an IDX file."""
    if len(head) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(head)} bytes)")
    if head[0] != 0 or head[1] != 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{head[:4].hex()} "
                         f"(must start with two zero bytes)")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02x} "
                         f"(known: {', '.join(f'0x{c:02x}' for c in IDX_DTYPES)})")
    if not 1 <= ndim <= _MAX_NDIM:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions (1..{_MAX_NDIM} allowed)")
    header_len = 4 + 4 * ndim
    if len(head) < header_len:
        raise ValueError(f"{path}: truncated IDX header ({len(head)} of {header_len} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(head, ">u4", count=ndim, offset=4))
    return IDX_DTYPES[code], shape, header_len


def read_idx(path: PathLike, max_bytes: int = 1 << 30) -> Array:
    """Read one IDX file (raw or gzip) into a native-endian ndarray.

    The data length must equal exactly prod(shape) * itemsize; a declared
    size over `max_bytes` (default 1 GiB; MNIST's largest file is 47 MB) is
    refused before reading the data, so a small gzip "bomb" cannot make the
    reader inflate gigabytes."""
    path = os.fspath(path)
    head = read_bytes(path, limit=4 + 4 * _MAX_NDIM)
    dtype, shape, header_len = parse_idx_header(head, path)
    # Python ints: no overflow however large the declared dims.
    expected = dtype.itemsize
    for s in shape:
        expected *= s
    if expected > max_bytes:
        raise ValueError(f"{path}: IDX header declares shape {shape} = {expected} bytes, "
                         f"over the {max_bytes}-byte limit")
    raw = read_bytes(path, limit=header_len + expected)
    got = len(raw) - header_len
    if got != expected:
        raise ValueError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes of {dtype.name}) "
            f"but the file holds {'more than ' if got > expected else ''}{got} data bytes"
            f"{' (truncated)' if got < expected else ''}")
    data = np.frombuffer(raw, dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _check_mnist_pair(images, labels, img_path, lbl_path, num_classes):
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{img_path}: expected uint8 images of shape (N, H, W), "
                         f"got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{lbl_path}: expected uint8 labels of shape (N,), "
                         f"got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{img_path} holds {len(images)} images but {lbl_path} holds "
                         f"{len(labels)} labels")
    if len(labels) and labels.max() >= num_classes:
        raise ValueError(f"{lbl_path}: label {int(labels.max())} out of range "
                         f"[0, {num_classes})")


def load_idx_pair(images_path, labels_path, classes, name):
    """An ArrayDataset from one images/labels IDX pair: float32 (N,1,H,W)
    in [0, 1] (pixel / 255) and int64 labels."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    _check_mnist_pair(images, labels, images_path, labels_path, len(classes))
    x = (images.astype(np.float32) / np.float32(255))[:, None]
    return ArrayDataset(x, labels.astype(np.int64), classes, name,
                        {"images_file": os.fspath(images_path),
                         "labels_file": os.fspath(labels_path)})


def _resolve_dir(data_dir, kind):
    """The subdirectory of data_dir holding the training images file."""
    for sub in _SUBDIRS[kind]:
        d = os.path.join(os.fspath(data_dir), sub)
        try:
            find_file(d, _MNIST_FILES["train_images"], kind)
            return d
        except FileNotFoundError:
            continue
    return os.fspath(data_dir)  # let find_file below report the canonical names


def load_mnist(data_dir: PathLike, kind: str = "mnist") -> Tuple[ArrayDataset, ArrayDataset]:
    """(train, test) ArrayDatasets from the four standard IDX files in
    `data_dir` (or its MNIST/raw / FashionMNIST/raw subdirectory), each
    raw or gzip'ed. kind: "mnist" or "fashion-mnist"."""
    if kind not in _SUBDIRS:
        raise ValueError(f"load_mnist: kind must be 'mnist' or 'fashion-mnist', got {kind!r}")
    if not os.path.isdir(os.fspath(data_dir)):
        raise FileNotFoundError(
            f"load_mnist: data directory {os.fspath(data_dir)!r} does not exist; it should hold "
            + ", ".join(n[0] + "[.gz]" for n in _MNIST_FILES.values()))
    d = _resolve_dir(data_dir, kind)
    paths = {k: find_file(d, names, f"load_mnist({kind})") for k, names in _MNIST_FILES.items()}
    classes = FASHION_CLASSES if kind == "fashion-mnist" else MNIST_CLASSES
    return (load_idx_pair(paths["train_images"], paths["train_labels"], classes, f"{kind}-train"),
            load_idx_pair(paths["test_images"], paths["test_labels"], classes, f"{kind}-test"))


def load_fashion_mnist(data_dir: PathLike) -> Tuple[ArrayDataset, ArrayDataset]:
    """load_mnist(data_dir, kind="fashion-mnist")."""
    return load_mnist(data_dir, kind="fashion-mnist")


def write_idx(path: PathLike, array: ArrayLike, compress: Optional[bool] = None) -> str:
    """Write `array` as an IDX file (gzip when `compress` or the name ends in
    .gz). The inverse of read_idx; used to build test fixtures and exports."""
    import gzip
    array = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    dt = array.dtype.newbyteorder("=")
    if dt not in codes:
        raise ValueError(f"write_idx: dtype {array.dtype} has no IDX code")
    header = bytes([0, 0, codes[dt], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + np.ascontiguousarray(array, IDX_DTYPES[codes[dt]]).tobytes()
    path = os.fspath(path)
    if compress or (compress is None and path.endswith(".gz")):
        payload = gzip.compress(payload, mtime=0)
    with open(path, "wb") as f:
        f.write(payload)
    return path
