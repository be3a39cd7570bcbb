"""What convcore.training.fit does differently on several ranks.

    the model     wrapped in DistributedDataParallel (unless it already is)
    train data    a DataLoader without a sampler gets a DistributedSampler
                  with its own shuffle, seed (rank 0's, for every rank) and
                  drop_last: each rank a disjoint shard, the batch size per
                  rank as given (the global batch is world_size times it)
    validation    each rank evaluates a contiguous slice of the validation
                  set, each image exactly once (no padding, unlike the
                  sampler), and the loss sums and confusion matrices are
                  added over the ranks: every rank gets the metrics of the
                  whole set, so callbacks and schedulers decide alike
    metrics       the epoch's loss, accuracy and image counts summed over
                  the ranks
    files         checkpoints and ModelCheckpoint files written by rank 0
    output        progress bar and per-epoch lines on rank 0 only
    failures      an exception escaping fit() on one rank ends the job
                  (MPI_Abort) with a message naming the rank, instead of
                  leaving the others waiting in a collective
"""
import numpy as np

from convcore._runtime import mpi as _mpi
from convcore.data import DataLoader
from convcore.distributed.ddp import DistributedDataParallel
from convcore.distributed.sampler import DistributedSampler


def world_for_fit(distributed):
    """The world size fit() trains with: distributed=None joins MPI when a
    launcher started several ranks (or it was initialised already)."""
    if distributed is False:
        return 1
    if distributed is None and not _mpi.is_initialized() and _mpi.launched_size() <= 1:
        return 1
    if not _mpi.is_initialized():
        _mpi.init()
    return _mpi.world_size()


def wrap_model(model):
    """(model for the steps, whether fit made the wrapper)."""
    if isinstance(model, DistributedDataParallel):
        return model, False
    return DistributedDataParallel(model), True


def shard_loader(loader, fn):
    """`loader` with each rank's share of the data."""
    if not isinstance(loader, DataLoader):
        raise TypeError(f"{fn}: on {_mpi.world_size()} ranks the training data must be a "
                        f"convcore DataLoader (or arrays), so that each rank can take its "
                        f"share; got {type(loader).__name__}")
    if loader.sampler is not None:  # the user's own split (a DistributedSampler, say)
        return loader
    seed = np.array([loader.seed % 2**63], dtype=np.int64)  # rank 0's, for everyone
    _mpi.broadcast(seed)
    sampler = DistributedSampler(loader.labels, shuffle=loader.shuffle, seed=int(seed[0]),
                                 drop_last=loader.drop_last)
    sharded = DataLoader((loader.images, loader.labels), loader.batch_size,
                         seed=int(seed[0]), drop_last=loader.drop_last,
                         transform=loader.transform, dtype=loader.dtype,
                         prefetch=loader.prefetch, sampler=sampler,
                         data_format=loader.data_format)
    sharded.set_epoch(loader.epoch)
    return sharded


def reduce_epoch(total_loss, correct, seen):
    """The epoch's (loss sum, correct, samples) summed over the ranks."""
    sums = _mpi.all_reduce(np.array([total_loss, correct, seen], dtype=np.float64), "sum")
    return float(sums[0]), int(sums[1]), int(sums[2])


def evaluate_sharded(model, loader, loss, evaluate):
    """(mean loss, accuracy) of `model` on the whole of `loader`'s data,
    each rank evaluating a contiguous slice (`evaluate` is
    convcore.training.evaluate)."""
    n, world, r = len(loader.labels), _mpi.world_size(), _mpi.rank()
    lo, hi = n * r // world, n * (r + 1) // world
    local_classes = 0
    loss_sum, cm = 0.0, None
    if hi > lo:
        shard = DataLoader((loader.images, loader.labels), loader.batch_size,
                           transform=loader.transform, dtype=loader.dtype,
                           sampler=np.arange(lo, hi), data_format=loader.data_format)
        res = evaluate(model, shard, loss)
        cm = res.metrics.confusion
        local_classes = cm.shape[0]
        loss_sum = 0.0 if res.loss is None else res.loss * (hi - lo)
    classes = int(_mpi.all_reduce(np.array([local_classes], dtype=np.int64), "max")[0])
    full = np.zeros((classes, classes), dtype=np.int64)
    if cm is not None:
        full[:cm.shape[0], :cm.shape[1]] = cm
    _mpi.all_reduce(full, "sum")
    total = float(_mpi.all_reduce(np.array([loss_sum]), "sum")[0])
    count = int(full.sum())
    return (total / max(count, 1) if loss is not None else None,
            float(np.trace(full)) / max(count, 1))


def agree(flag):
    """Rank 0's boolean, on every rank."""
    value = np.array([bool(flag)], dtype=np.int8)
    return bool(_mpi.broadcast(value)[0])
