"""The embedded default data set: handwritten digits, 8x8, 1,797 images.

The UCI "optical recognition of handwritten digits" test set as shipped by
scikit-learn (sklearn.datasets.load_digits), stored in _digits.npz inside
this package (45 KB; tools/make_digits_npz.py regenerates and checks it),
so it needs neither a download nor scikit-learn."""
from __future__ import annotations

import os
from typing import Tuple

import numpy as np

from convcore.data.dataset import ArrayDataset
from convcore.data.splits import stratified_split
from convcore.utils.types import Array

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_digits.npz")
MAX_LEVEL = 16  # grey levels are integers 0..16 (4x4 block counts)


def load_digits_arrays() -> Tuple[Array, Array]:
    """(images uint8 (1797, 8, 8) in 0..16, labels uint8 (1797,)) exactly as
    scikit-learn's load_digits() has them (images, target)."""
    with np.load(_PATH, allow_pickle=False) as f:
        return f["images"], f["labels"]


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Tuple[ArrayDataset, ArrayDataset]:
    """(train, test) ArrayDatasets of the digits: images float32 of shape
    (N, 1, 8, 8) scaled to [0, 1] (level / 16), labels int64 0..9.

    The split is stratified by class and fixed by `seed` (default: 1,438
    train / 359 test with test_fraction=0.2)."""
    images, labels = load_digits_arrays()
    x = (images.astype(np.float32) / np.float32(MAX_LEVEL))[:, None, :, :]
    y = labels.astype(np.int64)
    train_idx, test_idx = stratified_split(y, test_fraction, seed)
    classes = tuple(str(d) for d in range(10))
    meta = {"source": "UCI optical handwritten digits via scikit-learn", "seed": seed,
            "test_fraction": test_fraction}
    return (ArrayDataset(x[train_idx], y[train_idx], classes, "digits-train", meta),
            ArrayDataset(x[test_idx], y[test_idx], classes, "digits-test", meta))
