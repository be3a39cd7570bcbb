"""fork safety: convcore's kernels run single-threaded in a forked child.

GNU libgomp is not fork-safe: once the parent has run a parallel region,
its worker threads exist only in the parent, and the first parallel region
in a forked child waits for them forever (GCC bug 52303; a
multiprocessing 'fork' worker that calls a conv simply hangs). A team of
one thread never touches the pool, so after a fork `kernel_threads()`
returns 1 and convcore warns once, on the first kernel call that wanted
more. 'spawn' and 'forkserver' children start a fresh interpreter and use
every thread; convcore's own DataLoader uses them.
"""
import os
import sys
import threading
import warnings

_forked = False
_warned = False


def in_forked_child():
    """True in a process forked (without exec) from one that imported convcore."""
    return _forked


def warn_single_threaded():
    """Say once per child why its kernels run on one thread."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            "convcore: running in a forked child process; OpenMP (libgomp) is "
            "not fork-safe, so convcore's kernels run single-threaded here. Use "
            "multiprocessing's 'spawn' or 'forkserver' start method for "
            "multi-threaded kernels in workers.", RuntimeWarning, stacklevel=3)


def _after_fork_in_child():
    global _forked, _warned
    _forked = True
    _warned = False
    # A lock held by another parent thread at the fork stays held forever in
    # the child, where that thread does not exist: start from fresh state.
    threads = sys.modules.get("convcore._runtime.threads")
    if threads is not None:
        threads._lock = threading.Lock()
        threads._blas_held = 0
        threads._blas_saved = None
        threads._blas.reset_hold()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
