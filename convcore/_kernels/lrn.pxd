from cython cimport floating

# Local response normalisation across channels for one image, viewed as
# (C, S); public, nogil, thread-safe for disjoint (image, block) pairs.

# Window of channel c: [c - before, c + after] (PyTorch: before = size//2,
# after = (size-1)//2); alpha_over_size = alpha / size.
cdef struct LrnParams:
    Py_ssize_t C, S
    Py_ssize_t before, after
    double k, alpha_over_size, beta


cdef inline LrnParams lrn_params(Py_ssize_t C, Py_ssize_t S, Py_ssize_t size,
                                 double alpha, double beta, double k) noexcept nogil:
    """PyTorch's window: size//2 channels before c, (size-1)//2 after."""
    cdef LrnParams p
    p.C = C
    p.S = S
    p.before = size // 2
    p.after = (size - 1) // 2
    p.k = k
    p.alpha_over_size = alpha / size
    p.beta = beta
    return p


cdef inline Py_ssize_t lrn_scratch_size(const LrnParams* p, Py_ssize_t L,
                                        bint backward) noexcept nogil:
    """Doubles of scratch one block of L positions needs."""
    return ((2 * p.C + 1) if backward else (p.C + 1)) * L


# y (or grad_x) at spatial positions [s0, s0 + L) of every channel; x, y,
# gy, gx point at the image. scratch: (C + 1) * L doubles for the forward,
# (2C + 1) * L for the backward.
cdef void lrn_forward_block(const floating* x, floating* y,
                            const LrnParams* p, Py_ssize_t s0, Py_ssize_t L,
                            double* scratch) noexcept nogil
cdef void lrn_backward_block(const floating* gy, const floating* x,
                             floating* gx, const LrnParams* p, Py_ssize_t s0,
                             Py_ssize_t L, double* scratch) noexcept nogil
