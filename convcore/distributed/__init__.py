"""Data-parallel training over MPI (mpi4py): one process per rank, each on
its share of every batch, gradients averaged with MPI collectives.

    import convcore.distributed as dist
    dist.init()                                  # rank/world size from mpiexec
    model = dist.DistributedDataParallel(model)  # same weights on every rank
    loader = DataLoader(train, 64, sampler=dist.DistributedSampler(train, seed=0))
    ... out = model(x); model.backward(loss.backward()); optimizer.step()

Run it with `mpiexec -n 4 python script.py`, or `mpiexec -n 4 convcore
train --distributed`; `convcore.training.fit` does all of the above by
itself when it runs on several ranks. MPI comes from `pip install
"convcore[mpi]"`; world size 1 works without it.

The collectives (all_reduce, broadcast, all_gather) are thin wrappers over
mpi4py's buffer calls on NumPy arrays, in place as torch.distributed's.
"""
from convcore._runtime.mpi import (abort, active, all_gather, all_reduce, barrier, broadcast, init,
                           is_initialized, launched_size, local_rank, local_size, mpi_library,
                           rank, world_size)
from convcore.distributed.ddp import DistributedDataParallel
from convcore.distributed.sampler import DistributedSampler
from convcore.nn.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

DataParallel = DistributedDataParallel

__all__ = ["init", "is_initialized", "rank", "world_size", "local_rank", "local_size",
           "barrier", "all_reduce", "broadcast", "all_gather", "abort", "active",
           "launched_size", "mpi_library", "DistributedDataParallel", "DataParallel",
           "DistributedSampler", "SyncBatchNorm", "convert_sync_batchnorm"]
