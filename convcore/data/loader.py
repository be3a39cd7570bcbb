"""DataLoader: batches of (images, labels) from an ArrayDataset or arrays.

Determinism: one integer seed fixes everything. Epoch e shuffles with a
Generator seeded from (seed, e); batch b of epoch e augments with one
seeded from (seed, e, b). So results do not depend on the prefetch thread,
on how far a previous epoch was iterated, or on batch order of evaluation;
set_epoch(e) resumes exactly. The data set arrays are only read: a batch
is a fancy-indexed copy, and transforms return new arrays.

Prefetch uses one background thread (NumPy's copies and arithmetic release
the GIL). No process pool: GNU OpenMP is not fork-safe, and spawned
workers would re-import and copy the data set for little gain at these
sizes."""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

from convcore._runtime import seed as _seed
from convcore.data.dataset import ArrayDataset
from convcore.utils.layout import CHANNELS_FIRST, check_data_format, from_channels_first
from convcore.utils.validation import check_int
from convcore.utils.types import Array

_SHUFFLE, _AUGMENT = 0, 1  # spawn_key streams of one seed


class DataLoader:
    """Iterate over a data set in batches.

    dataset : ArrayDataset, or a pair (images, labels) of arrays with equal
        first dimension (images any float array, labels 1-D integers)
    batch_size : int >= 1
    shuffle : reshuffle at the start of every epoch (seeded)
    seed : int or None (None: drawn from convcore's default generator, which
        convcore.manual_seed seeds; kept in `self.seed`)
    drop_last : skip the last incomplete batch
    transform : callable (images, rng) -> images applied to each batch, e.g.
        Compose(RandomHorizontalFlip(), RandomShift(2), Normalize.fit(x))
    dtype : convert image batches to this float dtype (default: keep)
    prefetch : number of batches prepared ahead by a background thread (0: none)
    sampler : which rows an epoch visits, in order, instead of shuffle:
        an object with __iter__ (row indices), __len__ and optionally
        set_epoch(e), such as convcore.distributed.DistributedSampler
        (each rank its own shard)
    data_format : keyword-only, the layout of the image batches yielded:
        "channels_first" (N, C, H, W, default) or "channels_last"
        (N, H, W, C), for a model built with data_format="channels_last".
        The data set's images are channels-first (ArrayDataset converts
        channels-last ones), and transforms run on them before the
        batch is transposed (a view, as the layers' outputs are).

    Yields (images, labels int64) per batch.
    """

    def __init__(self, dataset: Union[ArrayDataset, Tuple[Array, Array]],
                 batch_size: int = 64, shuffle: bool = False, seed: Optional[int] = None,
                 drop_last: bool = False, transform: Optional[Callable[..., Array]] = None,
                 dtype: Optional[DTypeLike] = None, prefetch: int = 0,
                 sampler: Optional[Any] = None, *,
                 data_format: str = CHANNELS_FIRST) -> None:
        fn = "DataLoader"
        self.data_format = check_data_format(data_format, fn)
        if isinstance(dataset, ArrayDataset):
            images, labels = dataset.images, dataset.labels
        elif isinstance(dataset, (tuple, list)) and len(dataset) == 2:
            images, labels = dataset
        else:
            raise TypeError(f"{fn}: dataset must be an ArrayDataset or an (images, labels) "
                            f"pair, got {type(dataset).__name__}")
        if not isinstance(images, np.ndarray) or images.ndim < 1:
            raise TypeError(f"{fn}: images must be a numpy.ndarray, got {type(images).__name__}")
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"{fn}: labels must be a 1-D integer array, got dtype "
                             f"{labels.dtype} shape {labels.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{fn}: {len(images)} images (shape {images.shape}) but "
                             f"{len(labels)} labels")
        if transform is not None and not callable(transform):
            raise TypeError(f"{fn}: transform must be callable, got {transform!r}")
        if dtype is not None and np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"{fn}: dtype must be float32 or float64, got {np.dtype(dtype)}")
        if sampler is not None:
            if shuffle:
                raise ValueError(f"{fn}: give either shuffle=True or a sampler (which "
                                 "shuffles itself), not both")
            if not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")):
                raise TypeError(f"{fn}: sampler must have __iter__ and __len__, got "
                                f"{type(sampler).__name__}")
        self.images, self.labels = images, labels
        self.sampler = sampler
        self.batch_size = check_int(batch_size, "batch_size", 1, fn)
        self.prefetch = check_int(prefetch, "prefetch", 0, fn)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.transform, self.dtype = transform, None if dtype is None else np.dtype(dtype)
        # Unseeded: a seed from convcore's default generator, so that
        # convcore.manual_seed makes the shuffles and augmentation repeat.
        self.seed = (int(_seed.default_generator().integers(2**63)) if seed is None
                     else check_int(seed, "seed", 0, fn))
        self.epoch = 0

    def __len__(self) -> int:
        n, b = self._rows(), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def num_samples(self) -> int:
        """Samples yielded per epoch (after drop_last)."""
        return len(self) * self.batch_size if self.drop_last else self._rows()

    def _rows(self):
        return len(self.labels) if self.sampler is None else len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration runs as (for resuming a run)."""
        self.epoch = check_int(epoch, "epoch", 0, "DataLoader.set_epoch")

    def _rng(self, *key):
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    def order(self, epoch: int) -> Array:
        """Row order of an epoch: the sampler's, a seeded permutation, or 0..N-1."""
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
            order = np.fromiter(iter(self.sampler), dtype=np.int64, count=len(self.sampler))
            if order.size and (order.min() < 0 or order.max() >= len(self.labels)):
                raise IndexError(f"DataLoader: the sampler gave row {order.max()} or "
                                 f"{order.min()}, outside 0..{len(self.labels) - 1}")
            return order
        n = len(self.labels)
        return self._rng(epoch, _SHUFFLE).permutation(n) if self.shuffle else np.arange(n)

    def batch(self, epoch: int, index: int, order: Optional[Array] = None) -> Tuple[Array, Array]:
        """Batch `index` of `epoch`, computed on its own (same result as when iterating)."""
        order = self.order(epoch) if order is None else order
        rows = order[index * self.batch_size:(index + 1) * self.batch_size]
        x = self.images[rows]          # fancy indexing: always a copy
        if self.dtype is not None and x.dtype != self.dtype:
            x = x.astype(self.dtype)
        if self.transform is not None:
            x = self.transform(x, self._rng(epoch, _AUGMENT, index))
        return from_channels_first(x, self.data_format), self.labels[rows].astype(np.int64)

    def _batches(self, epoch):
        order = self.order(epoch)
        for b in range(len(self)):
            yield self.batch(epoch, b, order)

    def __iter__(self) -> Iterator[Tuple[Array, Array]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.prefetch == 0:
            return self._batches(epoch)
        return _prefetched(self._batches(epoch), self.prefetch)

    def __repr__(self) -> str:
        return (f"DataLoader(n={len(self.labels)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, "
                + ("" if self.sampler is None else f"sampler={self.sampler!r}, ")
                + f"transform={self.transform!r}, prefetch={self.prefetch})")


_DONE = object()


def _prefetched(batches, depth):
    """Run the `batches` generator in a daemon thread, `depth` items ahead.
    An exception in the thread is re-raised in the consumer; a consumer that
    stops early (break, garbage collection) stops the thread."""
    q = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in batches:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # forwarded to the consumer, re-raised there
            put(e)

    thread = threading.Thread(target=work, name="convcore-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
