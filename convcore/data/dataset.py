"""ArrayDataset: images and labels held in memory, read-only.

Every reader in convcore.data returns these; the loader and the training
loop read them and never write into them (the arrays are flagged
read-only, so an accidental in-place write raises instead of silently
corrupting the training set)."""
from dataclasses import dataclass, field

import numpy as np


# eq=False: field-wise == on arrays is ambiguous; datasets compare by identity.
@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A labelled image set.

    images : ndarray of shape (N, C, H, W), float32 in [0, 1] (read-only)
    labels : ndarray of shape (N,), int64 in [0, len(classes)) (read-only)
    classes : tuple of str, the class names, index = label
    name : str, for messages and reports
    """
    images: np.ndarray
    labels: np.ndarray
    classes: tuple
    name: str = "dataset"
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.ndim != 4:
            raise ValueError(
                f"ArrayDataset({self.name}): images must be a 4-D (N, C, H, W) ndarray, "
                f"got {getattr(images, 'shape', type(images).__name__)}")
        if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(
                f"ArrayDataset({self.name}): labels must be a 1-D integer ndarray, got "
                f"{getattr(labels, 'dtype', type(labels).__name__)} "
                f"{getattr(labels, 'shape', '')}")
        if len(images) != len(labels):
            raise ValueError(
                f"ArrayDataset({self.name}): {len(images)} images but {len(labels)} labels")
        k = len(self.classes)
        if len(labels) and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(
                f"ArrayDataset({self.name}): labels must lie in [0, {k}), found "
                f"[{labels.min()}, {labels.max()}]")
        # Read-only views: the caller keeps ownership of the originals.
        object.__setattr__(self, "images", _readonly(images))
        object.__setattr__(self, "labels", _readonly(labels.astype(np.int64, copy=False)))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        """(images[index], labels[index]); an int gives one (C,H,W) image."""
        return self.images[index], self.labels[index]

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def image_shape(self):
        """(C, H, W)."""
        return tuple(self.images.shape[1:])

    def subset(self, indices, name=None):
        """A new ArrayDataset of the given rows (copies them)."""
        indices = np.asarray(indices)
        return ArrayDataset(self.images[indices], self.labels[indices], self.classes,
                            name or self.name, dict(self.meta))

    def class_counts(self):
        """Number of samples per class, shape (num_classes,), int64."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def __repr__(self):
        return (f"ArrayDataset(name={self.name!r}, images={self.images.shape} "
                f"{self.images.dtype}, classes={self.num_classes})")


def _readonly(a):
    view = a.view()
    view.flags.writeable = False
    return view
