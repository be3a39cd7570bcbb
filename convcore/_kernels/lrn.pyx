"""Local response normalisation across channels (AlexNet), forward and
backward, with PyTorch's semantics:

    d[c] = k + alpha / size * sum_{j = c - size//2}^{c + (size-1)//2} x[j]^2
    y[c] = x[c] * d[c]^-beta            (channels outside [0, C) add zero)

    grad_x[i] = grad_y[i] * d[i]^-beta
                - 2 * alpha / size * beta * x[i]
                  * sum_{c : i in window(c)} grad_y[c] * x[c] * d[c]^(-beta-1)

where i is in window(c) exactly when c lies in
[i - (size-1)//2, i + size//2] (the window mirrored).

The input is viewed as (N, C, S), S the spatial size. Work items are
(image, block of BLOCK spatial positions); each runs its channel sums
along contiguous rows of its block, with per-thread double scratch
(squares, and in the backward the grad_y * x * d^(-beta-1) terms)
allocated once per call. Items write disjoint outputs: no reduction,
results independent of the thread count.
"""
from cython cimport floating
# LrnParams and the block workers' signatures are in lrn.pxd (public).
from cython.parallel cimport prange
from libc.math cimport pow, sqrt
from libc.stdlib cimport malloc, free
from convcore._kernels._openmp cimport omp_get_thread_num

# Spatial positions per work item: rows of BLOCK doubles stay in L1/L2
# for C up to a few hundred channels.
cdef enum:
    BLOCK = 256


cdef inline double _pow_neg_beta(double d, double beta) noexcept nogil:
    """d ** -beta. beta = 0.75 (AlexNet's, and PyTorch's default) takes two
    square roots, several times cheaper than pow and within a few ulp."""
    cdef double r
    if beta == 0.75:
        r = sqrt(d)
        return 1.0 / (r * sqrt(r))
    return pow(d, -beta)


cdef inline void _window_sum(const double* rows, Py_ssize_t C, Py_ssize_t L,
                             Py_ssize_t c, Py_ssize_t before,
                             Py_ssize_t after, double* out) noexcept nogil:
    """out[j] = sum of rows[c', j] for c' in [c-before, c+after] ∩ [0, C)."""
    cdef Py_ssize_t lo = c - before, hi = c + after, cc, j
    if lo < 0:
        lo = 0
    if hi > C - 1:
        hi = C - 1
    for j in range(L):
        out[j] = 0
    for cc in range(lo, hi + 1):
        for j in range(L):
            out[j] += rows[cc * L + j]


cdef void lrn_forward_block(const floating* x, floating* y,
                            const LrnParams* p, Py_ssize_t s0, Py_ssize_t L,
                            double* scratch) noexcept nogil:
    """One image's channels at spatial positions [s0, s0 + L). x, y point at
    the image; scratch holds (C + 1) * L doubles."""
    cdef double* sq = scratch
    cdef double* acc = scratch + p.C * L
    cdef Py_ssize_t c, j
    cdef double v
    for c in range(p.C):
        for j in range(L):
            v = x[c * p.S + s0 + j]
            sq[c * L + j] = v * v
    for c in range(p.C):
        _window_sum(sq, p.C, L, c, p.before, p.after, acc)
        for j in range(L):
            y[c * p.S + s0 + j] = <floating> (
                x[c * p.S + s0 + j]
                * _pow_neg_beta(p.k + p.alpha_over_size * acc[j], p.beta))


cdef void lrn_backward_block(const floating* gy, const floating* x,
                             floating* gx, const LrnParams* p, Py_ssize_t s0,
                             Py_ssize_t L, double* scratch) noexcept nogil:
    """As lrn_forward_block, for grad_x; scratch holds (2C + 1) * L doubles."""
    cdef double* sq = scratch
    cdef double* t = scratch + p.C * L
    cdef double* acc = scratch + 2 * p.C * L
    cdef Py_ssize_t c, j, o
    cdef double v, d, dpow, g
    cdef double two_a_beta = 2 * p.alpha_over_size * p.beta
    for c in range(p.C):
        for j in range(L):
            v = x[c * p.S + s0 + j]
            sq[c * L + j] = v * v
    # First term, and t[c] = grad_y[c] * x[c] * d[c]^(-beta-1).
    for c in range(p.C):
        _window_sum(sq, p.C, L, c, p.before, p.after, acc)
        for j in range(L):
            o = c * p.S + s0 + j
            d = p.k + p.alpha_over_size * acc[j]
            dpow = _pow_neg_beta(d, p.beta)
            g = gy[o]
            acc[j] = g * dpow          # the first term, kept until stored
            t[c * L + j] = g * x[o] * dpow / d
        for j in range(L):
            gx[c * p.S + s0 + j] = <floating> acc[j]
    # Second term: channel i collects t over the mirrored window.
    for c in range(p.C):
        _window_sum(t, p.C, L, c, p.after, p.before, acc)
        for j in range(L):
            o = c * p.S + s0 + j
            gx[o] = <floating> (gx[o] - two_a_beta * x[o] * acc[j])


cdef double* _scratch(int threads, Py_ssize_t per_thread) except NULL:
    """Per-thread scratch, allocated with the GIL so that failure is a
    MemoryError, never a crash inside the parallel region."""
    cdef double* buf = <double*> malloc(threads * per_thread * sizeof(double))
    if buf == NULL:
        raise MemoryError(
            f"convcore: cannot allocate {threads} x {per_thread} LRN scratch")
    return buf


# ---------------------------------------------------------------------------
# Drivers, called by convcore.functional after every check; arrays are
# C-contiguous (N, C, S), N, C, S >= 1, size >= 1.

def forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
            Py_ssize_t size, double alpha, double beta, double k,
            int num_threads):
    """y = local response normalisation of x across channels.        OUT: y"""
    cdef LrnParams p = lrn_params(x.shape[1], x.shape[2], size, alpha, beta, k)
    cdef Py_ssize_t blocks = (p.S + BLOCK - 1) // BLOCK
    cdef Py_ssize_t L0 = BLOCK if p.S > BLOCK else p.S
    cdef Py_ssize_t per_thread = lrn_scratch_size(&p, L0, False), item, n, s0, L
    cdef double* scratch = _scratch(num_threads, per_thread)
    try:
        with nogil:
            for item in prange(x.shape[0] * blocks, schedule='static',
                               num_threads=num_threads):
                n = item // blocks
                s0 = (item % blocks) * BLOCK
                L = p.S - s0 if p.S - s0 < BLOCK else BLOCK
                lrn_forward_block(&x[n, 0, 0], &y[n, 0, 0], &p, s0, L,
                                  scratch + omp_get_thread_num() * per_thread)
    finally:
        free(scratch)


def backward(const floating[:, :, ::1] grad_y, const floating[:, :, ::1] x,
             floating[:, :, ::1] grad_x, Py_ssize_t size, double alpha,
             double beta, double k, int num_threads):
    """grad_x (overwritten) of the forward above.               OUT: grad_x"""
    cdef LrnParams p = lrn_params(x.shape[1], x.shape[2], size, alpha, beta, k)
    cdef Py_ssize_t blocks = (p.S + BLOCK - 1) // BLOCK
    cdef Py_ssize_t L0 = BLOCK if p.S > BLOCK else p.S
    cdef Py_ssize_t per_thread = lrn_scratch_size(&p, L0, True), item, n, s0, L
    cdef double* scratch = _scratch(num_threads, per_thread)
    try:
        with nogil:
            for item in prange(x.shape[0] * blocks, schedule='static',
                               num_threads=num_threads):
                n = item // blocks
                s0 = (item % blocks) * BLOCK
                L = p.S - s0 if p.S - s0 < BLOCK else BLOCK
                lrn_backward_block(&grad_y[n, 0, 0], &x[n, 0, 0],
                                   &grad_x[n, 0, 0], &p, s0, L,
                                   scratch + omp_get_thread_num() * per_thread)
    finally:
        free(scratch)
