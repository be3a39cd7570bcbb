# Fixed partial sums, shared by the weight gradients of conv_gemm and
# winograd: the work is cut into at most NUM_PARTIALS chunks fixed by the
# shape (never by the thread count), each summed in order into its own
# buffer, and the buffers are then added in chunk order. The result is
# therefore the same at any thread count.
from cython cimport floating
from cython.parallel cimport prange

cdef enum:
    NUM_PARTIALS = 8


cdef inline void sum_partials(const floating* partials, Py_ssize_t nchunks,
                              Py_ssize_t size, floating* out,
                              int num_threads) noexcept nogil:
    """out[i] = partials[i] + partials[size + i] + ... over nchunks buffers
    of `size` elements, in chunk order."""
    cdef Py_ssize_t i, c
    cdef floating acc
    for i in prange(size, schedule='static', num_threads=num_threads):
        acc = 0
        for c in range(nchunks):
            acc = acc + partials[c * size + i]
        out[i] = acc
