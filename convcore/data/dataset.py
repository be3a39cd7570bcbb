"""ArrayDataset: images and labels held in memory, read-only.

Every reader in convcore.data returns these; the loader and the training
loop read them and never write into them (the arrays are flagged
read-only, so an accidental in-place write raises instead of silently
corrupting the training set).

Images are held channels-first (N, C, H, W), the layout every transform
and the loader work in. Channels-last images (N, H, W, C), as image
libraries and Keras data sets have them, are converted when the caller
says so (data_format="channels_last") and refused when evident but not
said, rather than read with H as the channels (see ArrayDataset)."""
from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Any, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from convcore.utils.layout import (
    CHANNELS_FIRST, CHANNELS_LAST, check_data_format, looks_channels_last, to_channels_first)
from convcore.utils.types import Array


# eq=False: field-wise == on arrays is ambiguous; datasets compare by identity.
@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A labelled image set.

    images : ndarray of shape (N, C, H, W), float32 in [0, 1] (read-only)
    labels : ndarray of shape (N,), int64 in [0, len(classes)) (read-only)
    classes : tuple of str, the class names, index = label
    name : str, for messages and reports
    data_format : the layout of the `images` given (init only; the data set
        always holds them channels-first):
        None (default): channels-first, except that images evidently
            channels-last (last dim 1, 3 or 4, dims 1 and 2 over 4; see
            convcore.utils.layout.looks_channels_last) are refused with a
            ValueError saying to pass data_format;
        "channels_first" ("NCHW"): taken as (N, C, H, W), unchecked;
        "channels_last" ("NHWC"): (N, H, W, C), converted to channels-first
            (a copy; the caller's array is untouched).
    """
    images: np.ndarray
    labels: np.ndarray
    classes: tuple
    name: str = "dataset"
    meta: dict = field(default_factory=dict, compare=False, repr=False)
    data_format: InitVar[str] = None

    def __post_init__(self, data_format):
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.ndim != 4:
            raise ValueError(
                f"ArrayDataset({self.name}): images must be a 4-D (N, C, H, W) ndarray, "
                f"got {getattr(images, 'shape', type(images).__name__)}")
        images = self._channels_first(images, data_format)
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

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Any) -> Tuple[Array, Array]:
        """(images[index], labels[index]); an int gives one (C,H,W) image."""
        return self.images[index], self.labels[index]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> Tuple[int, ...]:
        """(C, H, W)."""
        return tuple(self.images.shape[1:])

    def subset(self, indices: ArrayLike, name: Optional[str] = None) -> ArrayDataset:
        """A new ArrayDataset of the given rows (copies them)."""
        indices = np.asarray(indices)
        return ArrayDataset(self.images[indices], self.labels[indices], self.classes,
                            name or self.name, dict(self.meta), data_format=CHANNELS_FIRST)

    def class_counts(self) -> Array:
        """Number of samples per class, shape (num_classes,), int64."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def _channels_first(self, images, data_format):
        """The images as (N, C, H, W), from the layout data_format names."""
        fn = f"ArrayDataset({self.name})"
        if data_format is None:
            if looks_channels_last(images.shape):
                raise ValueError(
                    f"{fn}: images of shape {images.shape} look channels-last (N, H, W, C) "
                    f"with {images.shape[-1]} channels, but are held as (N, C, H, W); "
                    "pass data_format='channels_last' to convert them, or "
                    "data_format='channels_first' if dim 1 really is the channels")
            return images
        if check_data_format(data_format, fn) == CHANNELS_LAST:
            return np.ascontiguousarray(to_channels_first(images, CHANNELS_LAST))
        return images

    def __repr__(self) -> str:
        return (f"ArrayDataset(name={self.name!r}, images={self.images.shape} "
                f"{self.images.dtype}, classes={self.num_classes})")


def _readonly(a):
    view = a.view()
    view.flags.writeable = False
    return view
