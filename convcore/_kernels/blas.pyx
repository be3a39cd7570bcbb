"""Row-major GEMM over a Fortran BLAS: scipy.linalg.cython_blas's, or
another one loaded in the process (use_external; convcore._runtime.blas_backend).

A row-major C = op(A) op(B) is, read as column-major, C^T = op(B)^T op(A)^T:
so we call the Fortran routine with the operands swapped and the same
transpose flags, which needs no copy (the trick PyTorch and sklearn use).

gemm_split runs one product on convcore's own OpenMP threads, each slab of
C a one-thread GEMM: convcore never hands its cores to the BLAS's thread
pool (see convcore._runtime.threads).
"""
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

# The Fortran GEMMs of another BLAS loaded in the process (numpy's bundled
# OpenBLAS, say), by address, with 32-bit (LP64) or 64-bit (ILP64)
# integers; convcore._runtime.blas_backend picks and checks them. Unset: scipy's.
ctypedef void (*sgemm32_t)(const char*, const char*, const int*, const int*, const int*,
                           const float*, const float*, const int*, const float*,
                           const int*, const float*, float*, const int*) noexcept nogil
ctypedef void (*dgemm32_t)(const char*, const char*, const int*, const int*, const int*,
                           const double*, const double*, const int*, const double*,
                           const int*, const double*, double*, const int*) noexcept nogil
ctypedef void (*sgemm64_t)(const char*, const char*, const long long*, const long long*,
                           const long long*, const float*, const float*, const long long*,
                           const float*, const long long*, const float*, float*,
                           const long long*) noexcept nogil
ctypedef void (*dgemm64_t)(const char*, const char*, const long long*, const long long*,
                           const long long*, const double*, const double*, const long long*,
                           const double*, const long long*, const double*, double*,
                           const long long*) noexcept nogil

ctypedef void (*sgemv32_t)(const char*, const int*, const int*, const float*, const float*,
                           const int*, const float*, const int*, const float*, float*,
                           const int*) noexcept nogil
ctypedef void (*dgemv32_t)(const char*, const int*, const int*, const double*,
                           const double*, const int*, const double*, const int*,
                           const double*, double*, const int*) noexcept nogil
ctypedef void (*sgemv64_t)(const char*, const long long*, const long long*, const float*,
                           const float*, const long long*, const float*, const long long*,
                           const float*, float*, const long long*) noexcept nogil
ctypedef void (*dgemv64_t)(const char*, const long long*, const long long*, const double*,
                           const double*, const long long*, const double*, const long long*,
                           const double*, double*, const long long*) noexcept nogil

cdef void* _ext_s = NULL
cdef void* _ext_d = NULL
cdef void* _ext_sv = NULL
cdef void* _ext_dv = NULL
cdef bint _ext_ilp64 = False


def use_external(size_t sgemm_addr, size_t dgemm_addr, bint ilp64,
                 size_t sgemv_addr=0, size_t dgemv_addr=0):
    """Route the kernels' GEMMs (and the GEMVs that single-row products
    become) to the Fortran routines at these addresses (0: scipy's for that
    one). Call it before any kernel runs (convcore._runtime.blas_backend does, at
    import): it is not synchronised with calls in flight."""
    global _ext_s, _ext_d, _ext_sv, _ext_dv, _ext_ilp64
    _ext_s = <void*> sgemm_addr
    _ext_d = <void*> dgemm_addr
    _ext_sv = <void*> sgemv_addr
    _ext_dv = <void*> dgemv_addr
    _ext_ilp64 = ilp64


cdef void _gemv_row(bint trans_a, bint trans_b, int n, int k, floating alpha,
                    const floating* a, int lda, const floating* b, int ldb,
                    floating beta, floating* c) noexcept nogil:
    """c (1, n) = alpha * op(A)[0, :] (1, k) @ op(B) (k, n) + beta * c, as
    one GEMV: a GEMM of a single row packs all of B for one pass over it
    (a 1 x 25088 x 4096 classifier product ran 3.5x slower than GEMV). Row
    0 of op(A) is A's row 0 (step 1), or its column 0 (step lda). Row-major
    B (k, n) is column-major (n, k): c = B_cm a ("N"); row-major B (n, k)
    for op(B) = B^T is column-major (k, n): c = B_cm^T a ("T")."""
    cdef char t = b'T' if trans_b else b'N'
    cdef int rows = k if trans_b else n, cols = n if trans_b else k
    cdef int inca = lda if trans_a else 1, one = 1
    cdef long long rows8 = rows, cols8 = cols, ldb8 = ldb, inca8 = inca, one8 = 1
    if floating is float:
        if _ext_sv == NULL:
            sgemv(&t, &rows, &cols, &alpha, <float*> b, &ldb, <float*> a, &inca,
                  &beta, c, &one)
        elif _ext_ilp64:
            (<sgemv64_t> _ext_sv)(&t, &rows8, &cols8, &alpha, b, &ldb8, a, &inca8,
                                  &beta, c, &one8)
        else:
            (<sgemv32_t> _ext_sv)(&t, &rows, &cols, &alpha, b, &ldb, a, &inca,
                                  &beta, c, &one)
    else:
        if _ext_dv == NULL:
            dgemv(&t, &rows, &cols, &alpha, <double*> b, &ldb, <double*> a, &inca,
                  &beta, c, &one)
        elif _ext_ilp64:
            (<dgemv64_t> _ext_dv)(&t, &rows8, &cols8, &alpha, b, &ldb8, a, &inca8,
                                  &beta, c, &one8)
        else:
            (<dgemv32_t> _ext_dv)(&t, &rows, &cols, &alpha, b, &ldb, a, &inca,
                                  &beta, c, &one)


def external_in_use():
    """(float32, float64): whether each goes to an external GEMM."""
    return _ext_s != NULL, _ext_d != NULL


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               floating alpha, const floating* a, int lda,
               const floating* b, int ldb,
               floating beta, floating* c, int ldc) noexcept nogil:
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef long long m8 = m, n8 = n, k8 = k, lda8 = lda, ldb8 = ldb, ldc8 = ldc
    if m <= 0 or n <= 0:
        return
    if m == 1 and k > 0:
        _gemv_row(trans_a, trans_b, n, k, alpha, a, lda, b, ldb, beta, c)
        return
    if floating is float:
        if _ext_s == NULL:
            sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb,
                  <float*> a, &lda, &beta, c, &ldc)
        elif _ext_ilp64:
            (<sgemm64_t> _ext_s)(&tb, &ta, &n8, &m8, &k8, &alpha, b, &ldb8, a, &lda8,
                                 &beta, c, &ldc8)
        else:
            (<sgemm32_t> _ext_s)(&tb, &ta, &n, &m, &k, &alpha, b, &ldb, a, &lda,
                                 &beta, c, &ldc)
    else:
        if _ext_d == NULL:
            dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb,
                  <double*> a, &lda, &beta, c, &ldc)
        elif _ext_ilp64:
            (<dgemm64_t> _ext_d)(&tb, &ta, &n8, &m8, &k8, &alpha, b, &ldb8, a, &lda8,
                                 &beta, c, &ldc8)
        else:
            (<dgemm32_t> _ext_d)(&tb, &ta, &n, &m, &k, &alpha, b, &ldb, a, &lda,
                                 &beta, c, &ldc)


# A slab is at least SLAB_MACS multiply-adds (a parallel region's wake-up
# costs more than a smaller one saves, and the BLAS keeps its packed kernel)
# and SLAB_STEP rows or columns (each slab repacks the other operand, so
# thin slabs cost); at most one per thread. The cut is across the output,
# never the sums: every element adds the same products in the same order
# (measured bit for bit for float32 on OpenBLAS; float64 may differ in
# the last bit where the BLAS picks another edge kernel).
# SLAB_MACS is in blas.pxd (the gathered convolutions cut their GEMMs by
# images under the same floor).
cdef enum:
    SLAB_STEP = 32
    MAX_SLABS = 16


cdef inline int _slabs(int m, int n, int k) noexcept nogil:
    """Slabs along the longer side of C; a function of the shape only."""
    cdef Py_ssize_t side = m if m >= n else n
    cdef Py_ssize_t by_work = (<Py_ssize_t> m * n * k) // SLAB_MACS
    cdef Py_ssize_t by_side = side // SLAB_STEP
    return <int> max(1, min(by_work, by_side, <Py_ssize_t> MAX_SLABS))


cdef void gemm_split(bint trans_a, bint trans_b, int m, int n, int k,
                     floating alpha, const floating* a, int lda,
                     const floating* b, int ldb,
                     floating beta, floating* c, int ldc,
                     int num_threads) noexcept nogil:
    # One slab per thread: every slab packs the shared operand again (a
    # 512x784x4608 product in 16 slabs ran at a third of its speed).
    cdef int slabs = min(_slabs(m, n, k), num_threads), s
    cdef Py_ssize_t step, lo, hi
    cdef bint by_rows = m >= n
    if m <= 0 or n <= 0:
        return
    if slabs == 1 or num_threads <= 1:
        gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    # Slab edges on SLAB_STEP boundaries; the last slab takes the rest, so
    # that no slab is small enough for the BLAS to pick another kernel (as
    # OpenBLAS does below 100^3 multiply-adds): every slab then sums its
    # elements exactly as the whole product does.
    step = (m if by_rows else n) // slabs // SLAB_STEP * SLAB_STEP
    for s in prange(slabs, schedule='static', num_threads=max(1, min(num_threads, slabs))):
        lo = s * step
        if by_rows:
            hi = m if s == slabs - 1 else lo + step
            if lo < hi:  # rows of op(A): a's rows, or its columns when transposed
                gemm(trans_a, trans_b, <int> (hi - lo), n, k, alpha,
                     a + (lo if trans_a else lo * lda), lda, b, ldb,
                     beta, c + lo * ldc, ldc)
        else:
            hi = n if s == slabs - 1 else lo + step
            if lo < hi:  # columns of op(B): b's columns, or its rows when transposed
                gemm(trans_a, trans_b, m, <int> (hi - lo), k, alpha, a, lda,
                     b + (lo * ldb if trans_b else lo), ldb,
                     beta, c + lo, ldc)


def gemm_py(bint trans_a, bint trans_b, double alpha,
            const floating[:, ::1] a, const floating[:, ::1] b,
            double beta, floating[:, ::1] c, int num_threads=1):
    """C = alpha op(A) op(B) + beta C on C-contiguous 2-D arrays, on
    num_threads of convcore's threads (gemm_split; the caller holds the
    BLAS to one thread). The scalars are Python floats; the arrays pick the
    precision. Used by linear and by the benchmark's sgemm peak."""
    cdef int m = c.shape[0]
    cdef int n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        if beta == 0:
            c[:, :] = 0
        else:
            for i in range(m):
                for j in range(n):
                    c[i, j] = c[i, j] * <floating> beta
        return
    with nogil:
        gemm_split(trans_a, trans_b, m, n, k, <floating> alpha, &a[0, 0], a.shape[1],
                   &b[0, 0], b.shape[1], <floating> beta, &c[0, 0], c.shape[1], num_threads)


def slabs(int m, int n, int k, int num_threads=1 << 30):
    """How many slabs gemm_split cuts an (m, n, k) product into (tests)."""
    return min(_slabs(m, n, k), num_threads)


# The one-thread hold of the BLAS the kernels call (convcore._runtime.threads):
# its C thread-count getter and setter by address, and a count of the
# kernel calls in flight. hold()/release() run with the GIL held, which
# orders them between Python threads; the first call in saves the count,
# the last out gives it back.
ctypedef int (*get_threads_t)() noexcept nogil
ctypedef void (*set_threads_t)(int) noexcept nogil
cdef get_threads_t _get_threads = NULL
cdef set_threads_t _set_threads = NULL
cdef int _held = 0
cdef int _saved = 1


def set_thread_knob(size_t get_addr, size_t set_addr):
    """The BLAS's int get(void) and void set(int) thread-count functions."""
    global _get_threads, _set_threads
    _get_threads = <get_threads_t> get_addr
    _set_threads = <set_threads_t> set_addr


# Idle OpenBLAS thread pools (convcore._runtime.blas_pools): after each
# threaded call a pthreads OpenBLAS's workers spin for about 0.1 s, each
# holding a core that convcore's threads then share. Every kernel call
# that goes parallel stops the pools that are up (their workers exit;
# OpenBLAS starts them again at its next threaded call, as it does after
# a fork) when `_may_stop()` says no other thread can be inside them.
# While the kernels' own pool is down hold() and release() write its
# count directly: the setter would start the pool again, and its new
# workers would spin in turn.
ctypedef int (*shutdown_t)() noexcept nogil
cdef enum:
    MAX_POOLS = 4
cdef int* _pool_up[MAX_POOLS]
cdef shutdown_t _pool_stop[MAX_POOLS]
cdef int _pools = 0
cdef int* _kernel_pool_up = NULL    # the kernels' BLAS: its pool's flag ...
cdef int* _kernel_count = NULL      # ... and its thread count
cdef object _may_stop = None
cdef Py_ssize_t _stops = 0


def add_pool(size_t up_addr, size_t stop_addr, size_t count_addr=0):
    """An OpenBLAS pool: its blas_server_avail flag and its
    blas_thread_shutdown_ function, by address; count_addr (its
    blas_cpu_number) marks the BLAS the kernels call."""
    global _pools, _kernel_pool_up, _kernel_count
    if _pools == MAX_POOLS:
        raise ValueError(f"blas.add_pool: at most {MAX_POOLS} pools")
    _pool_up[_pools] = <int*> up_addr
    _pool_stop[_pools] = <shutdown_t> stop_addr
    _pools += 1
    if count_addr:
        _kernel_pool_up, _kernel_count = <int*> up_addr, <int*> count_addr


def set_stop_guard(may_stop):
    """may_stop() -> bool, asked before stopping pools (None: never stop)."""
    global _may_stop
    _may_stop = may_stop


def pool_stops():
    """Pools stopped so far in this process."""
    return _stops


def stop_idle_pools():
    """Stop the registered pools that are up, if the guard allows: at
    every kernel call that goes parallel (threads.kernel_threads). A call
    on one thread leaves them: a spinning worker costs it nothing."""
    global _stops
    cdef int i
    cdef bint any_up = False
    for i in range(_pools):
        any_up = any_up or _pool_up[i][0] != 0
    if not any_up or _may_stop is None or not _may_stop():
        return
    for i in range(_pools):
        if _pool_up[i][0]:
            _pool_stop[i]()
            _stops += 1


cdef void _set_count(int n):
    if _kernel_count != NULL and not _kernel_pool_up[0]:
        _kernel_count[0] = n
    else:
        _set_threads(n)


def hold():
    """One BLAS thread until the matching release()."""
    global _held, _saved
    if _held == 0 and _get_threads != NULL:
        _saved = _get_threads()
        if _saved != 1:
            _set_count(1)
    _held += 1


def release():
    global _held
    _held -= 1
    if _held == 0 and _get_threads != NULL and _saved != 1:
        _set_count(_saved)


def held():
    """Kernel calls holding the BLAS now."""
    return _held


def reset_hold():
    """Forget holds (a forked child: the threads that held do not exist)."""
    global _held
    _held = 0
