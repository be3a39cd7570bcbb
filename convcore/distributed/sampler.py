"""DistributedSampler: each rank's share of a data set, as PyTorch's.

The indices of an epoch are one permutation of the whole data set, drawn
from (seed, epoch) alone, so every rank computes the same one without
talking; rank r takes every world_size-th index from position r. To give
every rank the same number of samples (ranks step together), the list is
padded by repeating its first indices, or with drop_last=True cut to a
multiple of world_size, exactly as torch.utils.data.distributed
.DistributedSampler does (with NumPy's generator instead of torch's, so the
permutations themselves differ from torch's).

Because the permutation does not depend on the world size, a run resumed
from a checkpoint with a different number of ranks goes on with the same
epochs in the same order: only the split among ranks changes.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Optional

import numpy as np

from convcore._runtime import mpi as _mpi
from convcore.utils.validation import check_int


class DistributedSampler:
    """Indices of this rank's shard of `dataset` (anything with len()).

    num_replicas, rank : default to the job's world size and rank
    shuffle : a new permutation every epoch (set_epoch), seeded by `seed`
    drop_last : cut the tail instead of padding it

    Iterating yields Python ints; len() is the shard size, equal on every
    rank. Call set_epoch(e) at the start of each epoch (DataLoader and
    convcore.training.fit do).
    """

    def __init__(self, dataset: Any, num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        fn = "DistributedSampler"
        try:
            self.total = len(dataset)
        except TypeError:
            raise TypeError(f"{fn}: dataset must have a length, got "
                            f"{type(dataset).__name__}") from None
        self.num_replicas = (_mpi.world_size() if num_replicas is None
                             else check_int(num_replicas, "num_replicas", 1, fn))
        self.rank = _mpi.rank() if rank is None else check_int(rank, "rank", 0, fn)
        if self.rank >= self.num_replicas:
            raise ValueError(f"{fn}: rank {self.rank} is not below num_replicas "
                             f"{self.num_replicas}")
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed = check_int(seed, "seed", 0, fn)
        self.epoch = 0
        if self.drop_last and self.total % self.num_replicas:
            self.num_samples = self.total // self.num_replicas
        else:
            self.num_samples = math.ceil(self.total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_int(epoch, "epoch", 0, "DistributedSampler.set_epoch")

    def global_order(self, epoch: Optional[int] = None) -> np.ndarray:
        """All ranks' indices of an epoch, padded or cut, before the split."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(epoch,)))
            order = rng.permutation(self.total)
        else:
            order = np.arange(self.total)
        if self.total_size > len(order):  # pad by repeating from the start
            reps = math.ceil((self.total_size - len(order)) / max(1, len(order)))
            order = np.concatenate([order] + [order] * reps)
        return order[:self.total_size]

    def indices(self, epoch: Optional[int] = None) -> np.ndarray:
        """This rank's indices of an epoch as an int64 array."""
        return self.global_order(epoch)[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self):
        return (f"DistributedSampler(n={self.total}, num_replicas={self.num_replicas}, "
                f"rank={self.rank}, shuffle={self.shuffle}, seed={self.seed}, "
                f"drop_last={self.drop_last})")
