# Row-major GEMM over scipy.linalg.cython_blas, callable without the GIL.
#
# C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C[m, n], all row-major
# with leading dimensions lda/ldb/ldc (elements between rows).
# Thread-safety: re-entrant, but with a multithreaded OpenBLAS, calls made
# from several OpenMP threads at once serialise inside OpenBLAS; convcore
# holds the BLAS it calls to one thread for every kernel call
# (convcore._threads.blas_single) and splits GEMMs itself (gemm_split).
from cython cimport floating

cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating* a, int lda,
               const floating* b, int ldb,
               floating beta, floating* c, int ldc) noexcept nogil

# The same product on convcore's OpenMP threads: C cut into slabs of rows or
# columns, how many by the shape only (so the result is the same at every
# thread count), the slabs shared out over num_threads. Inside a prange,
# call gemm: slabs there would only repack the shared operand.
cdef void gemm_split(bint trans_a, bint trans_b, int m, int n, int k,
                     floating alpha, const floating* a, int lda,
                     const floating* b, int ldb,
                     floating beta, floating* c, int ldc,
                     int num_threads) noexcept nogil


cdef inline void gemm_on(int num_threads, bint trans_a, bint trans_b, int m, int n, int k,
                         floating alpha, const floating* a, int lda,
                         const floating* b, int ldb,
                         floating beta, floating* c, int ldc) noexcept nogil:
    """gemm_split over num_threads, or one whole gemm on this thread when
    num_threads is 1 (a kernel's one-thread plan, or inside its prange)."""
    if num_threads > 1:
        gemm_split(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                   num_threads)
    else:
        gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
