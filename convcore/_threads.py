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

from convcore import _fork

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
    if n > previous:
        from convcore import _denormals
        _denormals.reapply()
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
    if n > 1 and _fork.in_forked_child():  # libgomp would hang: see _fork
        _fork.warn_single_threaded()
        return 1
    return n


# The BLAS's own pthread pool pays a wake-up per call, and on a shared
# machine a descheduled worker stalls the call for a whole time slice
# (measured: LeNet's tiny fully connected layers were 45% of a training
# step at 2 BLAS threads). Below this many multiply-adds per thread, one.
BLAS_GRAIN = 1 << 21


def blas_threads_for(work):
    """BLAS threads for one GEMM of `work` multiply-adds: convcore's thread
    count, fewer when the product is too small to share out."""
    return max(1, min(get_num_threads(), int(work) // BLAS_GRAIN))


def _get_controller():
    # Building the controller scans the loaded libraries (~1 ms); a cached
    # one limits in ~15 us, cheap enough to wrap every kernel call.
    global _controller
    if _controller is None:
        with _lock:
            if _controller is None:
                _controller = ThreadpoolController()
    return _controller


# The BLAS thread count is one per process, but kernels run concurrently
# from several Python threads (the GIL is released). A threadpoolctl limiter
# per call goes wrong when calls overlap: each restores "the original" it
# saw, so the last one out may leave the BLAS at 1 thread for good, and
# threadpoolctl (>= 3.6) silently ignores a limit set from any Python thread
# but the one currently "controlling" OpenBLAS. So the calls in flight share
# one state under _lock: the first saves each BLAS's count, later ones may
# only lower it (to the smallest asked; never raised under a GEMM in flight;
# results never depend on it), and the last one out restores the saved
# counts. The library setters are called directly, our lock being the one
# controller.
_blas_active = []
_blas_saved = None


def _blas_libs():
    return [lib for lib in _get_controller().lib_controllers if lib.user_api == "blas"]


def _set_blas(lib, n):
    getattr(lib, "_real_set_num_threads", lib.set_num_threads)(n)


@contextlib.contextmanager
def blas_threads(n):
    """Hold every loaded BLAS (numpy's and scipy's OpenBLAS) to n threads
    (to fewer while another Python thread's call asks for fewer)."""
    global _blas_saved
    libs = _blas_libs()
    with _lock:
        if not _blas_active:
            _blas_saved = [lib.get_num_threads() for lib in libs]
        if not _blas_active or n < min(_blas_active):
            for lib in libs:
                _set_blas(lib, n)
        _blas_active.append(n)
    try:
        yield
    finally:
        with _lock:
            _blas_active.remove(n)
            if not _blas_active:
                for lib, count in zip(libs, _blas_saved):
                    if count is not None:
                        _set_blas(lib, count)
                _blas_saved = None


def blas_info():
    """List of dicts (library, version, threads, ...) for the loaded BLAS."""
    return [info for info in _get_controller().info() if info.get("user_api") == "blas"]
