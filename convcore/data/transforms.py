"""Batch transforms: per-channel normalisation and random augmentation.

Every transform maps a batch (N, C, H, W) float array to a NEW array of
the same shape and dtype, never writing into its input. Random transforms
split into `sample(n, rng)` (draw the per-image parameters from a NumPy
Generator) and `apply(images, params)` (deterministic), so a test or a
caller can apply exactly known flips, shifts and angles; `__call__(images,
rng)` does both. Spatial augmentations run on the unnormalised [0, 1]
images (padding and fill 0 = black), so put Normalize last in a Compose.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, Sequence, Tuple, Union, overload

import numpy as np
from scipy import ndimage
from numpy.typing import ArrayLike

from convcore.utils.validation import as_float_array, check_int
from convcore.utils.types import Array, IntOrPair


def _batch(images, fn):
    return as_float_array(images, "images", ndim=4, fn=fn)


def channel_stats(images: Array) -> Tuple[Array, Array]:
    """Per-channel (mean, std) over N, H and W, float64 arrays of shape (C,).
    std is the population standard deviation (ddof=0), as torchvision
    recipes compute it. Accumulates in float64 one channel at a time, so a
    float32 training set needs no float64 copy of itself."""
    x = _batch(images, "channel_stats")
    if x.shape[0] == 0:
        raise ValueError("channel_stats: images is empty (shape %s)" % (x.shape,))
    c = x.shape[1]
    mean, std = np.empty(c), np.empty(c)
    for i in range(c):
        ch = x[:, i]
        mean[i] = ch.mean(dtype=np.float64)
        # dtype=float64: numpy 1.x would subtract a float64 scalar from a
        # float32 array in float32 (numpy 2 promotes, NEP 50).
        std[i] = np.sqrt(np.mean(np.square(np.subtract(ch, mean[i], dtype=np.float64))))
    return mean, std


# a transform: (images, rng) -> images
Transform = Callable[..., Array]


class Normalize:
    """(x - mean[c]) / std[c] per channel; output dtype = input dtype.
    Build it from the training set with Normalize.fit(train.images) and use
    the same instance for validation and test data."""

    def __init__(self, mean: ArrayLike, std: ArrayLike) -> None:
        self.mean = np.atleast_1d(np.asarray(mean, np.float64))
        self.std = np.atleast_1d(np.asarray(std, np.float64))
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError(f"Normalize: mean and std must be 1-D of equal length, got "
                             f"{self.mean.shape} and {self.std.shape}")
        if not np.all(np.isfinite(self.mean)) or not np.all(self.std > 0):
            raise ValueError(f"Normalize: mean must be finite and std > 0, got mean "
                             f"{self.mean.tolist()} std {self.std.tolist()}; a constant "
                             f"channel has std 0 (drop it or pass std=1 for it)")

    @classmethod
    def fit(cls, images: Array) -> Normalize:
        """Normalize with the per-channel statistics of `images`."""
        return cls(*channel_stats(images))

    def __call__(self, images: Array, rng: Optional[np.random.Generator] = None) -> Array:
        x = _batch(images, "Normalize")
        if x.shape[1] != len(self.mean):
            raise ValueError(f"Normalize: images have {x.shape[1]} channels (shape {x.shape}) "
                             f"but mean/std have {len(self.mean)}")
        m = self.mean.astype(x.dtype)[:, None, None]
        s = self.std.astype(x.dtype)[:, None, None]
        return (x - m) / s

    def __repr__(self) -> str:
        return f"Normalize(mean={np.round(self.mean, 4).tolist()}, std={np.round(self.std, 4).tolist()})"


class RandomTransform:
    """Base of the random transforms: __call__ = apply(images, sample(n, rng))."""

    def sample(self, n, rng):
        raise NotImplementedError

    def apply(self, images, params):
        raise NotImplementedError

    def __call__(self, images: Array, rng: np.random.Generator) -> Array:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"{type(self).__name__}: rng must be a numpy.random.Generator, "
                            f"got {type(rng).__name__}")
        return self.apply(images, self.sample(len(images), rng))


class RandomHorizontalFlip(RandomTransform):
    """Mirror each image left-right with probability p."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def sample(self, n, rng):
        """Boolean mask (n,): True = flip."""
        return rng.random(n) < self.p

    def apply(self, images, flip):
        x = _batch(images, "RandomHorizontalFlip")
        flip = np.asarray(flip, bool)
        if flip.shape != (x.shape[0],):
            raise ValueError(f"RandomHorizontalFlip: flip mask shape {flip.shape} does not "
                             f"match batch of {x.shape[0]}")
        out = x.copy()
        out[flip] = x[flip][..., ::-1]
        return out

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomShift(RandomTransform):
    """Shift each image by (dy, dx) whole pixels, each uniform in
    [-padding, padding], filling the uncovered border with zeros.

    The same as torchvision's RandomCrop(size=(H, W), padding=padding):
    zero-pad by `padding` on every side and crop an H x W window at a random
    offset (offset p - dy, p - dx)."""

    def __init__(self, padding: IntOrPair = 2) -> None:
        self.padding = int_or_pair(padding, "RandomShift", "padding")

    def sample(self, n, rng):
        """Integer array (n, 2) of (dy, dx)."""
        ph, pw = self.padding
        return np.stack([rng.integers(-ph, ph + 1, n), rng.integers(-pw, pw + 1, n)], axis=1)

    def apply(self, images, shifts):
        x = _batch(images, "RandomShift")
        n, c, h, w = x.shape
        shifts = np.asarray(shifts)
        if shifts.shape != (n, 2) or shifts.dtype.kind not in "iu":
            raise ValueError(f"RandomShift: shifts must be integers of shape ({n}, 2), got "
                             f"{shifts.dtype} {shifts.shape}")
        out = np.zeros_like(x)
        for i, (dy, dx) in enumerate(shifts.tolist()):
            # Output pixel (y, x) = input (y - dy, x - dx) where that exists;
            # a shift of the whole size or more leaves only zeros.
            if abs(dy) >= h or abs(dx) >= w:
                continue
            ys, yd = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
            xs, xd = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
            out[i, :, yd, xd] = x[i, :, ys, xs]
        return out

    def __repr__(self) -> str:
        return f"RandomShift(padding={self.padding})"


class RandomRotation(RandomTransform):
    """Rotate each image by an angle uniform in [-degrees, degrees]
    (positive = counter-clockwise, as torchvision) about its centre
    ((H-1)/2, (W-1)/2), sampling the source by "bilinear" or "nearest"
    interpolation; pixels from outside the image take `fill`."""
    degrees: Tuple[float, float]
    interpolation: str

    def __init__(self, degrees: Union[float, Tuple[float, float]] = 10.0,
                 interpolation: str = "bilinear",
                 fill: float = 0.0) -> None:
        if isinstance(degrees, (tuple, list)):
            lo, hi = (float(d) for d in degrees)
        else:
            if not isinstance(degrees, numbers.Real) or degrees < 0:
                raise ValueError(f"RandomRotation: degrees must be >= 0 or a (min, max) pair, "
                                 f"got {degrees!r}")
            lo, hi = -float(degrees), float(degrees)
        if lo > hi:
            raise ValueError(f"RandomRotation: degrees range ({lo}, {hi}) is empty")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"RandomRotation: interpolation must be 'bilinear' or 'nearest', "
                             f"got {interpolation!r}")
        self.degrees, self.interpolation, self.fill = (lo, hi), interpolation, float(fill)

    def sample(self, n, rng):
        """Angles in degrees, float64 (n,)."""
        return rng.uniform(self.degrees[0], self.degrees[1], n)

    def apply(self, images, angles):
        return rotate(images, angles, self.interpolation, self.fill)

    def __repr__(self) -> str:
        return f"RandomRotation(degrees={self.degrees}, interpolation={self.interpolation!r})"


def rotate(images: Array, angles: ArrayLike, interpolation: str = "bilinear",
           fill: float = 0.0) -> Array:
    """Rotate image i of (N, C, H, W) by angles[i] degrees counter-clockwise
    about the image centre ((H-1)/2, (W-1)/2); returns a new array of the
    same shape and dtype. `interpolation` "bilinear" or "nearest"; points
    that fall outside the image read `fill`, also as interpolation
    neighbours (scipy.ndimage.rotate, which does the work, mode
    "grid-constant"); multiples of 90 degrees are exact."""
    x = _batch(images, "rotate")
    n = x.shape[0]
    angles = np.asarray(angles, np.float64).reshape(-1)
    if angles.shape != (n,):
        raise ValueError(f"rotate: need one angle per image ({n}), got shape {angles.shape}")
    if interpolation not in _SPLINE_ORDER:
        raise ValueError(f"rotate: interpolation must be 'bilinear' or 'nearest', got "
                         f"{interpolation!r}")
    out = np.empty(x.shape, x.dtype)
    for i in range(n):  # one angle per image: scipy turns a whole array by one angle
        ndimage.rotate(x[i], angles[i], axes=(1, 2), reshape=False, output=out[i],
                       order=_SPLINE_ORDER[interpolation], mode="grid-constant",
                       cval=float(fill), prefilter=False)
    return out


# scipy.ndimage spline order of each interpolation.
_SPLINE_ORDER = {"nearest": 0, "bilinear": 1}


class Compose:
    """Apply transforms in order, each with the same Generator."""

    @overload
    def __init__(self, *transforms: Transform) -> None: ...

    @overload
    def __init__(self, transforms: Sequence[Transform], /) -> None: ...

    def __init__(self, *transforms: Any) -> None:
        if len(transforms) == 1 and isinstance(transforms[0], (list, tuple)):
            transforms = tuple(transforms[0])
        for t in transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable")
        self.transforms = tuple(transforms)

    def __call__(self, images: Array, rng: Optional[np.random.Generator] = None) -> Array:
        for t in self.transforms:
            images = t(images, rng)
        return images

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


def int_or_pair(v: IntOrPair, fn: str, name: str) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{fn}: {name} must be an int or a pair, got {v!r}")
        h, w = (check_int(e, name, 0, fn) for e in v)
        return (h, w)
    v = check_int(v, name, 0, fn)
    return (v, v)
