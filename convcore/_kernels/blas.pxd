# Row-major GEMM over scipy.linalg.cython_blas, callable without the GIL.
#
# C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C[m, n], all row-major
# with leading dimensions lda/ldb/ldc (elements between rows).
# Thread-safety: re-entrant, but with a multithreaded OpenBLAS, calls made
# from several OpenMP threads at once serialise inside OpenBLAS; callers that
# run GEMMs inside prange hold BLAS to one thread (convcore._threads).
from cython cimport floating

cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating* a, int lda,
               const floating* b, int ldb,
               floating beta, floating* c, int ldc) noexcept nogil
