"""Flush-to-zero / denormals-are-zero for the kernels' threads.

Arithmetic on denormal floats (|x| < 1.2e-38 in float32) takes a slow
microcode path on many x86 CPUs, 5-50x per operation; trained weights and
decayed gradients drift there (pytorch#19651). With FTZ (results that would
be denormal become 0) and DAZ (denormal inputs read as 0) set in the SSE
control register MXCSR, they cost nothing, at the price of exactly those
tiny values. MXCSR is per thread, so the bits are set in the calling thread
and in each thread of the OpenMP pool (threads the pool creates later copy
the creating thread's register). Elsewhere than x86 this does nothing and
says so.
"""
from cython.parallel cimport prange

cdef extern from "convcore/_kernels/fpenv.h":
    int CONVCORE_HAVE_MXCSR
    int convcore_get_ftz() noexcept nogil
    void convcore_set_ftz(int on) noexcept nogil


def supported():
    """True where the CPU has the FTZ/DAZ controls (x86 with SSE)."""
    return bool(CONVCORE_HAVE_MXCSR)


def get_ftz():
    """FTZ and DAZ both set in the calling thread."""
    return bool(convcore_get_ftz())


def set_ftz(bint on, int num_threads):
    """Set (or clear) FTZ and DAZ in the calling thread and in the first
    num_threads threads of the OpenMP pool: a static schedule of
    num_threads iterations gives each thread one."""
    cdef int i
    convcore_set_ftz(on)
    with nogil:
        for i in prange(num_threads, schedule='static', chunksize=1, num_threads=num_threads):
            convcore_set_ftz(on)


def pool_ftz(int num_threads):
    """FTZ/DAZ state of each of the first num_threads OpenMP threads (for
    tests and `convcore info`)."""
    cdef int i
    cdef int[64] state
    num_threads = max(1, min(num_threads, 64))
    with nogil:
        for i in prange(num_threads, schedule='static', chunksize=1, num_threads=num_threads):
            state[i] = convcore_get_ftz()
    return [bool(state[i]) for i in range(num_threads)]
