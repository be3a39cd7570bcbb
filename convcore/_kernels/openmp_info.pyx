"""What the kernels were compiled with: OpenMP on/off, compiler, flags."""
from convcore._kernels._openmp cimport (
    CONVCORE_USE_OPENMP, omp_get_max_threads, omp_get_num_procs, omp_get_wtime)
from convcore._kernels._simd cimport CONVCORE_HAVE_CLONES
from cython.parallel cimport prange

cdef extern from "convcore/_kernels/build_info.h":
    const char* CONVCORE_BUILD_CC
    const char* CONVCORE_BUILD_FLAGS
    int CONVCORE_BUILD_NATIVE


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(CONVCORE_USE_OPENMP)


def omp_max_threads():
    """omp_get_max_threads() of the OpenMP runtime (1 without OpenMP)."""
    return omp_get_max_threads()


def omp_num_procs():
    """Processors the OpenMP runtime sees (1 without OpenMP)."""
    return omp_get_num_procs()


def build_info():
    """dict with the compiler, the flags, whether -march=native was used and
    whether the hot row loops have AVX2+FMA copies picked at load time."""
    return {
        "compiler": CONVCORE_BUILD_CC.decode(),
        "flags": CONVCORE_BUILD_FLAGS.decode(),
        "march_native": bool(CONVCORE_BUILD_NATIVE),
        "openmp": bool(CONVCORE_USE_OPENMP),
        "simd_clones": bool(CONVCORE_HAVE_CLONES),
    }


cdef void _region(int num_threads, long work) noexcept nogil:
    """A parallel region of num_threads threads sharing `work` steps of a
    dependent multiply-add chain (a fixed amount of arithmetic, in cache;
    0: the region does nothing)."""
    cdef int i
    cdef long k, steps = work // num_threads
    cdef double x
    cdef double[64] sink
    for i in prange(num_threads, schedule='static', num_threads=num_threads):
        x = i
        for k in range(steps):
            x = x * 0.999999 + 1e-9
        sink[i % 64] = x


def hold_team(int num_threads):
    """Start a team of num_threads in the calling thread's own OpenMP pool
    and return: the team's workers then stay docked in that pool (asleep)
    for as long as the calling thread lives. convcore._runtime.omp_runtime calls it
    from a parked Python thread; see there for why."""
    with nogil:
        _region(num_threads, 0)


def region_seconds(int num_threads, int repeats, double gap, long work=0):
    """Wall time of `repeats` parallel regions of num_threads threads, each
    after `gap` seconds of work on the calling thread alone (as between two
    kernel calls): a list of seconds. The threads share `work` steps of
    arithmetic (0: the region does nothing). The median less the
    one-thread median over num_threads is what a region costs beyond its
    work, chiefly waking threads that went to sleep during the gap (all
    zeros without OpenMP)."""
    cdef int r
    cdef double t0, t1
    times = []
    for r in range(repeats):
        with nogil:
            t0 = omp_get_wtime()
            while omp_get_wtime() - t0 < gap:
                pass
            t0 = omp_get_wtime()
            _region(num_threads, work)
            t1 = omp_get_wtime()
        times.append(t1 - t0)
    return times
