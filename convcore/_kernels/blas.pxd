# Row-major GEMM over scipy.linalg.cython_blas, callable without the GIL.
#
# C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C[m, n], all row-major
# with leading dimensions lda/ldb/ldc (elements between rows).
# Thread-safety: re-entrant, but with a multithreaded OpenBLAS, calls made
# from several OpenMP threads at once serialise inside OpenBLAS; convcore
# holds the BLAS it calls to one thread for every kernel call
# (convcore._runtime.threads.blas_single) and splits GEMMs itself (gemm_split).
from cython cimport floating

cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating* a, int lda,
               const floating* b, int ldb,
               floating beta, floating* c, int ldc) noexcept nogil

# The same product on convcore's OpenMP threads: C cut into a slab of rows
# or columns per thread (fewer for a small product); one whole gemm at one
# thread.
cdef void gemm_split(bint trans_a, bint trans_b, int m, int n, int k,
                     floating alpha, const floating* a, int lda,
                     const floating* b, int ldb,
                     floating beta, floating* c, int ldc,
                     int num_threads) noexcept nogil

# The fewest multiply-adds of one thread's share of a split product:
# below it a parallel region's wake-up costs more than the share saves,
# and a share stays clear of OpenBLAS's small-matrix kernel (at most
# 100^3), which sums in another order: a split product then sums every
# element as the whole one does.
cdef enum:
    SLAB_MACS = 1 << 22
