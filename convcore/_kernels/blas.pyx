"""Row-major GEMM over scipy.linalg.cython_blas (column-major Fortran BLAS).

A row-major C = op(A) op(B) is, read as column-major, C^T = op(B)^T op(A)^T:
so we call the Fortran routine with the operands swapped and the same
transpose flags, which needs no copy (the trick PyTorch and sklearn use).
"""
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating* a, int lda,
               const floating* b, int ldb,
               floating beta, floating* c, int ldc) noexcept nogil:
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb,
              <float*> a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb,
              <double*> a, &lda, &beta, c, &ldc)


def gemm_py(bint trans_a, bint trans_b, double alpha,
            const floating[:, ::1] a, const floating[:, ::1] b,
            double beta, floating[:, ::1] c):
    """C = alpha op(A) op(B) + beta C on C-contiguous 2-D arrays (for tests
    and for measuring the peak of the very BLAS the kernels call). The
    scalars are Python floats; the arrays pick the precision."""
    cdef int m = c.shape[0]
    cdef int n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    with nogil:
        gemm(trans_a, trans_b, m, n, k, <floating> alpha, &a[0, 0], a.shape[1],
             &b[0, 0], b.shape[1], <floating> beta, &c[0, 0], c.shape[1])
