"""Who owns the threads: convcore's OpenMP loops, always.

convcore keeps one thread count (set_num_threads). Every prange is given it
explicitly (omp_set_num_threads would be thread-local in libgomp). The BLAS
runs single-threaded under every kernel call (`blas_single`), inside
convcore's parallel regions or as slabs of one GEMM split over convcore's
threads (blas.gemm_split). Handing the cores to the BLAS's own pool for
small batches was measured fragile: two pools spinning on the same cores
(OpenBLAS#3187, sklearn#28883), an order of magnitude slower whenever the
OpenMP runtime did not sleep its threads (another library loaded it first;
benchmarks/results/spin_waits.md).
"""
import contextlib
import ctypes
import os
import statistics
import threading
import time
from typing import Dict

from threadpoolctl import ThreadpoolController

from convcore._runtime import blas_pools as _blas_pools
from convcore._runtime import fork as _fork
from convcore._kernels import blas as _blas
from convcore._kernels import openmp_info

_OPENMP = openmp_info.openmp_enabled()

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
        from convcore._runtime import denormals as _denormals
        _denormals.reapply()
    return previous


def share_cores(processes):
    """When `processes` ranks of an MPI job share this machine and nothing
    chose convcore's threads yet (set_num_threads, OMP_NUM_THREADS), give
    this one its share of the cores, so ranks x threads <= cores."""
    global _num_threads
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if _num_threads is None and not env and processes > 1:
        _num_threads = max(1, _default_threads() // processes)
    return get_num_threads()


# Below this much work (multiply-adds or elements touched) per thread, a
# parallel region costs more than it saves: the fork/join is microseconds
# on an idle machine, and on a loaded one a spinning barrier can stall for a
# whole time slice (tiny convolutions ran far slower on 2 threads than on 1:
# benchmarks/results/spin_waits.md).
GRAIN = 1 << 16

# Seconds one thread takes per floating-point operation of a convolution
# or GEMM, roughly (one core of a recent x86; a depthwise convolution's run
# slower). With the cost of a parallel region on this machine
# (region_cost) they tell whether a call gains from more threads: with
# waits that sleep, every region pays the wake-up of a sleeping thread, and
# in a virtual machine that is tens of microseconds
# (benchmarks/results/spin_waits.md). Element-wise passes keep GRAIN alone:
# their time per element varies too much by kernel (one pass of ReLU, three
# of batch norm, five arrays of an optimizer step) for one number.
FLOP_SECONDS = 0.015e-9
DEPTHWISE_FLOP_SECONDS = 0.06e-9

# CONVCORE_REGION_US: the cost of a parallel region in microseconds, used
# as is instead of measuring it (0: only GRAIN decides, as before).
REGION_ENV = "CONVCORE_REGION_US"
# A call's threads must save this many region costs: a call may open more
# than one region, and a wait between real calls is longer than the
# measurement's, so the sleeping thread is slower to wake.
REGION_MARGIN = 2
# One measurement can fall while other processes keep the other CPUs busy
# (several processes starting at once): it then times waking a thread onto
# a running CPU, where waking an idle one costs several times more in a
# virtual machine, and a process that kept a low reading ran small
# convolutions on 2 threads at up to twice their time, where a high one
# costs them a few percent (benchmarks/results/spin_waits.md). So the cost
# is measured again at the first call this many seconds after the first
# measurement, each, and the largest measurement is kept.
REGION_REMEASURE_AFTER = (1.0, 4.0, 16.0)
# A measurement times this many regions of the thread count and as many of
# one thread, each after REGION_GAP seconds of the calling thread alone:
# about 10 ms in all. The first is taken at once; each later one a pair
# of regions at a time, at most one pair every REGION_SLICE_SECONDS, so
# that no call of the user's pays for a whole measurement (taken at once,
# it made one call of a network in every few hundred 12 ms slower, and
# those calls were the 95th percentile). A pair still costs a call two
# gaps: taken more often, the pairs were the slowest percent of a stream
# of millisecond calls. Spread out so, a measurement spans seconds, which
# also keeps a moment of load on the machine from deciding it alone.
REGION_REPEATS = 21
REGION_GAP = 200e-6
REGION_SLICE_SECONDS = 0.5
# The measured regions share this many steps of arithmetic (tens of
# microseconds on one thread, a small convolution's worth): an empty
# region could read a few microseconds where regions that work cost the
# wake-up of a sleeping thread, tens (benchmarks/results/spin_waits.md).
REGION_PROBE_STEPS = 40000
_clock = time.monotonic


def _region_samples(threads, repeats):
    """Seconds of `repeats` regions of `threads` threads and of as many of
    one thread, all sharing the same work: two lists."""
    return tuple(openmp_info.region_seconds(n, repeats, REGION_GAP, REGION_PROBE_STEPS)
                 for n in (threads, 1))


class _RegionCost:
    """What a region of `threads` threads costs: the largest of its
    measurements so far, when the next is due (None: no more), and the
    samples of the one under way."""
    __slots__ = ("threads", "value", "due", "_first", "_measured", "_many", "_one",
                 "_next_slice")

    def __init__(self, threads, value=None):
        self.threads, self.value, self.due = threads, value, None
        self._first, self._measured = None, []
        self._many, self._one, self._next_slice = [], [], 0.0

    def measure(self, now):
        """Take the next samples: a whole measurement if there is no value
        yet, else one slice of it when one is due."""
        if self.value is None:
            self._collect(*_region_samples(self.threads, REGION_REPEATS), now)
        elif now >= self._next_slice:
            self._collect(*_region_samples(self.threads, 1), now)
            self._next_slice = now + REGION_SLICE_SECONDS

    def _collect(self, many, one, now):
        self._many += many
        self._one += one
        if len(self._many) < REGION_REPEATS:
            return
        seconds = max(0.0, statistics.median_high(self._many)
                      - statistics.median_high(self._one) / self.threads)
        self._many, self._one = [], []
        if self._first is None:
            self._first = now
        self._measured.append(seconds)
        self.value = max(self._measured)
        k = len(self._measured) - 1
        self.due = (self._first + REGION_REMEASURE_AFTER[k]
                    if k < len(REGION_REMEASURE_AFTER) else None)


_region_costs: Dict[int, _RegionCost] = {}


def _region_cost_from_env():
    env = os.environ.get(REGION_ENV, "").strip()
    try:
        return max(0.0, float(env)) * 1e-6 if env else None
    except ValueError:
        return None


def region_cost(threads):
    """Seconds a parallel region of `threads` threads costs beyond its
    work: regions after a pause of the calling thread, as between kernel
    calls, against regions of one thread, measured at the first call and
    again as REGION_REMEASURE_AFTER says, or CONVCORE_REGION_US."""
    cost = _region_costs.get(threads)
    if cost is None:
        cost = _RegionCost(threads, _region_cost_from_env())
        _region_costs[threads] = cost
        if cost.value is not None:
            return cost.value  # from the environment: never measured
        cost.measure(_clock())
    elif cost.due is not None:
        now = _clock()
        if now >= cost.due:
            cost.measure(now)
    return cost.value


def kernel_threads(work=None, seconds_per_unit=None):
    """Threads for one kernel call's prange loops: convcore's thread count,
    fewer when `work` (approximate operations) is too small to share out,
    and 1 when the kernels were built without OpenMP. Too small: under
    GRAIN units a thread, or, given seconds_per_unit (one thread's time per
    unit of work), less time saved by the threads than REGION_MARGIN times
    what a parallel region costs on this machine (region_cost)."""
    if not _OPENMP:
        return 1
    n = _num_threads or get_num_threads()
    if work is not None:
        n = max(1, min(n, int(work) // GRAIN))
    if n > 1 and _fork.in_forked_child():  # libgomp would hang: see _fork
        _fork.warn_single_threaded()
        return 1
    if (n > 1 and work is not None and seconds_per_unit is not None
            and work * seconds_per_unit * (1 - 1 / n) <= REGION_MARGIN * region_cost(n)):
        return 1
    if n > 1:
        if _knobs is None:
            _kernel_knobs()  # registers the BLAS pools (blas_pools.install)
        _blas.stop_idle_pools()  # a spinning BLAS worker would take a core
    return n


def conv_threads(spec, backward=False):
    """kernel_threads for a convolution of a ConvSpec: its forward, or its
    backward (input and weight gradients: twice the forward's work)."""
    return kernel_threads(spec.flops() * (2 if backward else 1),
                          DEPTHWISE_FLOP_SECONDS if spec.is_depthwise else FLOP_SECONDS)


def _get_controller():
    # Building the controller scans every loaded library: do it once.
    global _controller
    if _controller is None:
        with _lock:
            if _controller is None:
                _controller = ThreadpoolController()
    return _controller


def _blas_libs():
    return [lib for lib in _get_controller().lib_controllers if lib.user_api == "blas"]


def _kernel_blas_libs():
    """The BLAS that the kernels call (convcore._runtime.blas_backend picks it)."""
    from convcore._runtime import blas_backend as _blas_backend
    lib = _blas_backend.select()
    return [lib] if lib is not None else []


class _BlasKnob:
    """get/set of one BLAS's thread count. For a pthreads OpenBLAS (the
    wheels') the C functions themselves, resolved once: a set costs well
    under a microsecond. Anything else through threadpoolctl."""

    c_functions = None  # (get, set) addresses of the C functions, when known

    def __init__(self, lib):
        self.lib = lib
        self.get, self.set = lib.get_num_threads, getattr(
            lib, "_real_set_num_threads", lib.set_num_threads)
        if lib.internal_api == "openblas" and getattr(lib, "threading_layer", "") != "openmp":
            try:
                prefix, suffix = lib._find_affixes()
                self.get = getattr(lib.dynlib, f"{prefix}openblas_get_num_threads{suffix}")
                self.set = getattr(lib.dynlib, f"{prefix}openblas_set_num_threads{suffix}")
                self.c_functions = tuple(ctypes.cast(f, ctypes.c_void_p).value
                                         for f in (self.get, self.set))
            except (AttributeError, TypeError):  # another threadpoolctl: keep its calls
                pass


_knobs = None


_FAST_HOLD = False


def _kernel_knobs():
    global _knobs, _FAST_HOLD
    if _knobs is None:
        knobs = [_BlasKnob(lib) for lib in _kernel_blas_libs()]
        libs = _blas_libs()
        with _lock:
            if _knobs is None:
                _knobs = knobs
                if len(knobs) == 1 and knobs[0].c_functions:
                    _blas.set_thread_knob(*knobs[0].c_functions)
                    _blas_pools.install(libs, knobs[0].lib)
                    _FAST_HOLD = True
    return _knobs


# One owner of the cores: convcore's OpenMP threads do all of convcore's
# work, and the BLAS the kernels call runs on the calling thread only (a
# GEMM too big for one thread is cut up by blas.gemm_split). The pthreads
# OpenBLAS of the wheels has one process-wide thread count (its
# openblas_set_num_threads_local is process-wide too, measured), so it is
# set to 1 for the duration of each kernel call and given back after: the
# user's own numpy/scipy calls get their own count (a user's call made
# from another Python thread while a kernel runs would see one thread),
# and the other BLAS copy is not touched at all. Calls from several Python
# threads overlap: the first in saves the counts, the last out restores them.
_blas_held = 0
_blas_saved = None


class _BlasSingle:
    """The hold as a context. For an OpenBLAS whose C setter we have, the
    count lives in blas.hold()/release() (a fraction of a microsecond);
    anything else goes through the threadpoolctl knob under _lock."""
    __slots__ = ()

    def __enter__(self):
        global _blas_held, _blas_saved
        if _FAST_HOLD:
            _blas.hold()
            return self
        knobs = _knobs if _knobs is not None else _kernel_knobs()
        if _FAST_HOLD:  # _kernel_knobs found a C setter
            _blas.hold()
            return self
        with _lock:
            if _blas_held == 0:
                _blas_saved = [knob.get() for knob in knobs]
                for knob, count in zip(knobs, _blas_saved):
                    if count != 1:
                        knob.set(1)
            _blas_held += 1
        return self

    def __exit__(self, *exc):
        global _blas_held, _blas_saved
        if _FAST_HOLD:
            _blas.release()
            return False
        with _lock:
            _blas_held -= 1
            if _blas_held == 0:
                for knob, count in zip(_knobs, _blas_saved):
                    if count is not None and count != 1:
                        knob.set(count)
                _blas_saved = None
        return False


_BLAS_SINGLE = _BlasSingle()


def blas_single():
    """Context: the kernels' BLAS on one thread (see above)."""
    return _BLAS_SINGLE


def blas_info():
    """List of dicts (library, version, threads, ...) for the loaded BLAS."""
    return [info for info in _get_controller().info() if info.get("user_api") == "blas"]
