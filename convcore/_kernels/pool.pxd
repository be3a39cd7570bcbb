from cython cimport floating
from libc.stdint cimport int64_t

# Pooling workers for one (n, c) plane; public, nogil, thread-safe for
# disjoint planes. x is (H, W), y / idx / grad_y are (OH, OW), row-major.

# Window geometry: kernel (kh, kw), stride (sh, sw), top/left padding
# (ph, pw), dilation (dh, dw); OH/OW as convcore.functional computes them.
# The adaptive workers read only H, W, OH, OW.
cdef struct PoolParams:
    Py_ssize_t H, W, OH, OW
    Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw

# y = max over each window (padding is -inf; NaN wins, ties keep the first
# tap); idx (may be NULL) = flat index h*W + w of the max, -1 for a window
# with no tap inside the input.
cdef void max_pool_plane(const floating* x, floating* y, int64_t* idx,
                         const PoolParams* p) noexcept nogil
cdef void adaptive_max_plane(const floating* x, floating* y, int64_t* idx,
                             const PoolParams* p) noexcept nogil

# grad_x (in_plane values, overwritten) = grad_y scattered through idx
# (out_plane values, each in [-1, in_plane)).
cdef void max_unpool_plane(const floating* gy, const int64_t* idx,
                           floating* gx, Py_ssize_t in_plane,
                           Py_ssize_t out_plane) noexcept nogil

# Average pooling (zero padding, PyTorch's divisor rules) and its gradient
# (grad_x overwritten).
cdef void avg_pool_plane(const floating* x, floating* y, const PoolParams* p,
                         bint count_include_pad) noexcept nogil
cdef void avg_pool_backward_plane(const floating* gy, floating* gx,
                                  const PoolParams* p,
                                  bint count_include_pad) noexcept nogil

# Adaptive average pooling over [floor(i*H/OH), ceil((i+1)*H/OH)) windows.
cdef void adaptive_avg_plane(const floating* x, floating* y,
                             const PoolParams* p) noexcept nogil
cdef void adaptive_avg_backward_plane(const floating* gy, floating* gx,
                                      const PoolParams* p) noexcept nogil
