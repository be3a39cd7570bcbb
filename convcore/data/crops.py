"""Size-changing crops: random crops for training, centre and multi-crop
(corners + centre, optionally mirrored) for evaluation, as AlexNet and VGG
evaluate: average the network's scores over the crops of each image.

Same-size random shifts with zero padding are RandomShift in transforms.py."""
from __future__ import annotations

import numpy as np

from convcore.data.transforms import RandomTransform, _batch, int_or_pair
from convcore.utils.types import Array, IntOrPair


def _check_size(x, size, padding, fn):
    sh, sw = size
    h, w = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    if not (1 <= sh <= h and 1 <= sw <= w):
        raise ValueError(f"{fn}: crop size {size} does not fit images of shape {x.shape} "
                         f"with padding {padding}")


def crop(images: Array, tops: Array, lefts: Array, size: IntOrPair) -> Array:
    """Image i cropped to rows tops[i]:tops[i]+size[0], columns
    lefts[i]:lefts[i]+size[1]; a new (N, C, size_h, size_w) array."""
    x = _batch(images, "crop")
    sh, sw = int_or_pair(size, "crop", "size")
    tops, lefts = np.asarray(tops).reshape(-1), np.asarray(lefts).reshape(-1)
    n, _, h, w = x.shape
    if tops.shape != (n,) or lefts.shape != (n,):
        raise ValueError(f"crop: need one top and one left per image ({n}), got "
                         f"{tops.shape} and {lefts.shape}")
    if n and (tops.min() < 0 or lefts.min() < 0 or tops.max() + sh > h or lefts.max() + sw > w):
        raise ValueError(f"crop: a {sh}x{sw} window at the given offsets leaves images of "
                         f"shape {x.shape}")
    rows = tops[:, None] + np.arange(sh)          # (n, sh)
    cols = lefts[:, None] + np.arange(sw)         # (n, sw)
    b = np.arange(n)[:, None, None]
    # x[b, :, rows, cols] -> (n, sh, sw, c)
    return np.ascontiguousarray(np.moveaxis(x[b, :, rows[:, :, None], cols[:, None, :]], -1, 1))


class RandomCrop(RandomTransform):
    """A random size[0] x size[1] window of each image after zero padding
    by `padding` on every side (torchvision's RandomCrop(size, padding))."""

    def __init__(self, size: IntOrPair, padding: IntOrPair = 0) -> None:
        self.size = int_or_pair(size, "RandomCrop", "size")
        self.padding = int_or_pair(padding, "RandomCrop", "padding")

    def sample(self, n, rng, image_hw):
        """(n, 2) integer offsets (top, left) into the padded image."""
        h, w = image_hw[0] + 2 * self.padding[0], image_hw[1] + 2 * self.padding[1]
        return np.stack([rng.integers(0, h - self.size[0] + 1, n),
                         rng.integers(0, w - self.size[1] + 1, n)], axis=1)

    def apply(self, images, offsets):
        x = _batch(images, "RandomCrop")
        _check_size(x, self.size, self.padding, "RandomCrop")
        ph, pw = self.padding
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        offsets = np.asarray(offsets)
        return crop(x, offsets[:, 0], offsets[:, 1], self.size)

    def __call__(self, images: Array, rng: np.random.Generator) -> Array:
        x = _batch(images, "RandomCrop")
        _check_size(x, self.size, self.padding, "RandomCrop")
        return self.apply(x, self.sample(len(x), rng, x.shape[2:]))

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


def _corner_offsets(h, w, size):
    sh, sw = size
    # torchvision's five_crop order: top-left, top-right, bottom-left,
    # bottom-right, centre (centre offset rounds like its center_crop).
    ct, cl = int(round((h - sh) / 2.0)), int(round((w - sw) / 2.0))
    return [(0, 0), (0, w - sw), (h - sh, 0), (h - sh, w - sw), (ct, cl)]


def center_crop(images: Array, size: IntOrPair) -> Array:
    """The centred size[0] x size[1] window of every image."""
    x = _batch(images, "center_crop")
    size = int_or_pair(size, "center_crop", "size")
    _check_size(x, size, (0, 0), "center_crop")
    t, l = _corner_offsets(x.shape[2], x.shape[3], size)[4]
    return np.ascontiguousarray(x[:, :, t:t + size[0], l:l + size[1]])


def multi_crop(images: Array, size: IntOrPair, flips: bool = True) -> Array:
    """Five crops (four corners and centre, torchvision's five_crop order),
    and with `flips` the same five of the mirrored images (ten_crop):
    an array of shape (5 or 10, N, C, size_h, size_w). Evaluate the model on
    each crop and average the scores."""
    x = _batch(images, "multi_crop")
    size = int_or_pair(size, "multi_crop", "size")
    _check_size(x, size, (0, 0), "multi_crop")
    sh, sw = size
    sources = (x, x[..., ::-1]) if flips else (x,)
    out = [src[:, :, t:t + sh, l:l + sw]
           for src in sources for t, l in _corner_offsets(x.shape[2], x.shape[3], size)]
    return np.ascontiguousarray(np.stack(out))
