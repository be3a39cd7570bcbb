# Whether an array holds only finite values: the direct kernels' check of
# their weights, before paths that would multiply padding by an Inf or NaN
# weight (the depthwise kernels, the blocked backward-data), which the
# generic kernels skip as the reference does.
from cython cimport floating
from libc.math cimport isfinite


cdef inline bint all_finite(const floating* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if not isfinite(a[i]):
            return False
    return True
