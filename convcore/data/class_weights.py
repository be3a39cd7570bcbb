"""Class weights for imbalanced data, from class frequencies."""
from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.typing import DTypeLike

from convcore.utils.validation import check_int
from convcore.utils.types import Array


def class_weights(labels: Array, num_classes: Optional[int] = None,
                  dtype: DTypeLike = np.float32) -> Array:
    """Inverse-frequency weights, normalised as scikit-learn's "balanced":

        weight[c] = n_samples / (num_classes * count[c])

    so a balanced set gets all ones and the weighted sample count equals
    n_samples. Pass the result as `weight=` to cross_entropy. Every class in
    [0, num_classes) must occur (a weight for an unseen class is undefined);
    otherwise ValueError listing the missing classes."""
    fn = "class_weights"
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) == 0:
        raise ValueError(f"{fn}: labels must be a non-empty 1-D integer array, got "
                         f"dtype {labels.dtype} shape {labels.shape}")
    if labels.min() < 0:
        raise ValueError(f"{fn}: labels must be >= 0, found {labels.min()}")
    k = int(labels.max()) + 1 if num_classes is None else check_int(num_classes, "num_classes", 1, fn)
    if labels.max() >= k:
        raise ValueError(f"{fn}: label {labels.max()} out of range for num_classes={k}")
    counts = np.bincount(labels, minlength=k)
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        raise ValueError(f"{fn}: classes {missing.tolist()} have no samples; "
                         f"their weight is undefined")
    return (len(labels) / (k * counts.astype(np.float64))).astype(dtype)
