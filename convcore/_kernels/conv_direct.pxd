from cython cimport floating
from convcore._kernels.conv_params cimport ConvParams

# Direct (no im2col) convolution workers; public, nogil, thread-safe for
# disjoint outputs. All arrays C-contiguous NCHW, sizes from *p.

# y[n, k] (OH, OW) = bias[k] + sum_{c,r,s} w[k, c, r, s] * x[n, g*Cg + c, ...]
# for one image n and one output channel k. bias may be NULL.
cdef void direct_forward_nk(const floating* x, const floating* w,
                            const floating* bias, floating* y,
                            const ConvParams* p, Py_ssize_t n,
                            Py_ssize_t k) noexcept nogil

# grad_x[n, ci] (H, W) for one image n and one input channel ci (overwritten).
cdef void direct_backward_data_nc(const floating* grad_y, const floating* w,
                                  floating* grad_x, const ConvParams* p,
                                  Py_ssize_t n, Py_ssize_t ci) noexcept nogil

# grad_w[k, c] (R, S) for one output channel k and channel c of its group,
# summed over the whole batch in image order (overwritten). acc: scratch of
# _weight_scratch_size(p) elements, private to the calling thread.
cdef void direct_backward_weight_kc(const floating* grad_y, const floating* x,
                                    floating* grad_w, const ConvParams* p,
                                    Py_ssize_t k, Py_ssize_t c,
                                    floating* acc) noexcept nogil


cdef inline Py_ssize_t _weight_scratch_size(const ConvParams* p) noexcept nogil:
    """direct_backward_weight_kc's scratch: a row of partial sums per tap."""
    return p.R * p.S * p.OW
