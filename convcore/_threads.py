"""Who owns the threads: convcore's OpenMP loops, or the BLAS.

convcore keeps one thread count (set_num_threads). Every prange is given it
explicitly (omp_set_num_threads would be thread-local in libgomp). A kernel
that runs GEMMs inside its own prange holds the BLAS to one thread for that
call (`blas_threads(1)`); a kernel that hands one big GEMM to the BLAS gives
the BLAS all threads and runs no prange around it. Never both at once: two
spinning pools on the same cores is the classic oversubscription
(OpenBLAS#3187, sklearn#28883).
"""
import contextlib
import os
import threading

from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_num_threads = None
_controller = None


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:  # cgroup/affinity aware where the platform supports it
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Threads convcore's kernels use (OpenMP loops and BLAS alike)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_threads()
    return _num_threads


def set_num_threads(n):
    """Set the threads convcore's kernels use; returns the previous value."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    previous = get_num_threads()
    _num_threads = n
    return previous


# Below this much work (multiply-adds or elements touched) per thread, a
# parallel region costs more than it saves: the fork/join is microseconds
# on an idle machine, and on a loaded one a spinning barrier can stall for a
# whole time slice (seen here: tiny convs 15x slower on 2 threads than 1).
GRAIN = 1 << 16


def kernel_threads(work=None):
    """Threads for one kernel call's prange loops: convcore's thread count,
    fewer when `work` (approximate operations) is too small to share out,
    and 1 when the kernels were built without OpenMP."""
    from convcore._kernels import openmp_info
    if not openmp_info.openmp_enabled():
        return 1
    n = get_num_threads()
    if work is not None:
        n = max(1, min(n, int(work) // GRAIN))
    return n


def _get_controller():
    # Building the controller scans the loaded libraries (~1 ms); a cached
    # one limits in ~15 us, cheap enough to wrap every kernel call.
    global _controller
    if _controller is None:
        with _lock:
            if _controller is None:
                _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def blas_threads(n):
    """Hold every loaded BLAS (numpy's and scipy's OpenBLAS) to n threads."""
    with _get_controller().limit(limits=n, user_api="blas"):
        yield


def blas_info():
    """List of dicts (library, version, threads, ...) for the loaded BLAS."""
    return [info for info in _get_controller().info() if info.get("user_api") == "blas"]
