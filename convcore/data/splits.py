"""Deterministic, stratified splits: a held-out test split and k folds.

Each class is shuffled on its own with a seeded generator and cut in the
same proportion, so every split keeps the class frequencies of the whole
(to within one sample per class) and the same seed gives the same split
on every machine and NumPy version (Generator.permutation over PCG64 is
stable)."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from convcore.utils.validation import check_int
from convcore.utils.types import Array


def _labels_1d(labels, fn):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{fn}: labels must be a 1-D integer array, got "
                         f"dtype {labels.dtype} shape {labels.shape}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"{fn}: labels must be >= 0, found {labels.min()}")
    return labels


def stratified_split(labels: Array, test_fraction: float = 0.2,
                     seed: int = 0) -> Tuple[Array, Array]:
    """Split row indices into (train_idx, test_idx), stratified by label.

    Per class with n samples, round(n * test_fraction) go to the test split
    (at least one when test_fraction > 0 and the class has >= 2 samples).
    Both index arrays are sorted, int64."""
    fn = "stratified_split"
    labels = _labels_1d(labels, fn)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"{fn}: test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = int(round(len(members) * float(test_fraction)))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        picked.append(rng.permutation(members)[:n_test])
    test = np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[test] = False
    return np.flatnonzero(mask).astype(np.int64), test.astype(np.int64)


def stratified_kfold(labels: Array, k: int = 5, seed: int = 0) -> List[Tuple[Array, Array]]:
    """k (train_idx, val_idx) pairs covering every row exactly once as
    validation; each class is dealt round-robin over the folds after a
    seeded shuffle, so fold sizes differ by at most one per class."""
    fn = "stratified_kfold"
    labels = _labels_1d(labels, fn)
    k = check_int(k, "k", minimum=2, fn=fn)
    if k > len(labels):
        raise ValueError(f"{fn}: k={k} folds but only {len(labels)} samples")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), np.int64)
    offset = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        # Continue the round-robin where the previous class stopped so small
        # classes do not all land in fold 0.
        fold_of[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]
