"""Process-wide runtime state, below every floor that computes.

    omp_runtime.py   OpenMP wait policy (set before the kernels load)
    threads.py       the one thread count; BLAS held to one thread
    blas_pools.py    idle OpenBLAS pools stopped when a kernel call starts
    fork.py          single-threaded kernels in a forked child
    denormals.py     set_flush_denormal (FTZ/DAZ in every kernel thread)
    grad_mode.py     no_grad(): layers keep nothing for backward
    blas_backend.py  which OpenBLAS copy the kernels' GEMMs call
    mpi.py           the thin MPI layer: rank, world size, collectives
    logs.py          the "convcore" logger shown on the console on request

Only floor 1 (convcore._kernels) lies below; everything above may import
from here. This file imports nothing: convcore/__init__.py imports
omp_runtime first so that it can set OMP_WAIT_POLICY before any kernel
loads the OpenMP runtime, and an import here would load kernels earlier.
"""
