"""The native kernel API (declared and documented in native.pxd and the
public convcore/native.pxd): concrete float32/float64 entry points over the
fused workers of conv_direct, conv_gemm, pool, batchnorm and lrn, one
image, filter, plane, channel or block per call, so downstream code can put them in its
own prange.

Each public function is a one-line call of a fused worker (the conv ones
through a private helper that loops the worker over channels or groups);
no arithmetic lives here.
"""
from cython cimport floating
from convcore._kernels.conv_direct cimport (
    direct_forward_nk, direct_backward_data_nc, direct_backward_weight_kc)
from convcore._kernels.conv_gemm cimport (
    _column_size, _forward_item, _backward_item)
from convcore._kernels.pool cimport (
    max_pool_plane, adaptive_max_plane, max_unpool_plane, avg_pool_plane,
    avg_pool_backward_plane, adaptive_avg_plane, adaptive_avg_backward_plane)
from convcore._kernels.batchnorm cimport channel_stats, channel_grad_sums
from convcore._kernels.lrn cimport lrn_forward_block, lrn_backward_block

# Python-level copy of the ABI version (convcore.__abi_version__).
ABI_VERSION = CONVCORE_ABI_VERSION


cdef int abi_version() noexcept nogil:
    return CONVCORE_ABI_VERSION


cdef int check_abi(int compiled_version) except -1:
    if compiled_version != CONVCORE_ABI_VERSION:
        from convcore import __version__
        raise ImportError(
            f"convcore native API: this extension was compiled against "
            f"convcore kernel ABI version {compiled_version}, but the "
            f"installed convcore {__version__} has kernel ABI version "
            f"{CONVCORE_ABI_VERSION}; rebuild the extension against the "
            f"installed convcore (include path convcore.get_include())")
    return 0


def check_abi_version(int compiled_version):
    """Python-level check_abi, for tools that record the ABI version they
    were built against: raises ImportError on a mismatch."""
    check_abi(compiled_version)


# -- direct ------------------------------------------------------------------

cdef inline void _direct_forward(const floating* x, const floating* w,
                                 const floating* bias, floating* y,
                                 const ConvParams* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(p.K):
        direct_forward_nk(x, w, bias, y, p, n, k)


cdef inline void _direct_backward_data(const floating* grad_y, const floating* w,
                                       floating* grad_x, const ConvParams* p,
                                       Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(p.C):
        direct_backward_data_nc(grad_y, w, grad_x, p, n, c)


cdef inline void _direct_backward_weight(const floating* grad_y, const floating* x,
                                         floating* grad_w, const ConvParams* p,
                                         Py_ssize_t k, floating* scratch) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(p.C // p.groups):
        direct_backward_weight_kc(grad_y, x, grad_w, p, k, c, scratch)


cdef Py_ssize_t conv2d_direct_weight_scratch_size(const ConvParams* p) noexcept nogil:
    # One row of partial sums per tap (see direct_backward_weight_kc).
    return p.R * p.S * p.OW


cdef void conv2d_direct_forward_f32(const float* x, const float* w,
                                    const float* bias, float* y,
                                    const ConvParams* p, Py_ssize_t n) noexcept nogil:
    _direct_forward(x, w, bias, y, p, n)


cdef void conv2d_direct_forward_f64(const double* x, const double* w,
                                    const double* bias, double* y,
                                    const ConvParams* p, Py_ssize_t n) noexcept nogil:
    _direct_forward(x, w, bias, y, p, n)


cdef void conv2d_direct_backward_data_f32(const float* grad_y, const float* w,
                                          float* grad_x, const ConvParams* p,
                                          Py_ssize_t n) noexcept nogil:
    _direct_backward_data(grad_y, w, grad_x, p, n)


cdef void conv2d_direct_backward_data_f64(const double* grad_y, const double* w,
                                          double* grad_x, const ConvParams* p,
                                          Py_ssize_t n) noexcept nogil:
    _direct_backward_data(grad_y, w, grad_x, p, n)


cdef void conv2d_direct_backward_weight_f32(const float* grad_y, const float* x,
                                            float* grad_w, const ConvParams* p,
                                            Py_ssize_t k, float* scratch) noexcept nogil:
    _direct_backward_weight(grad_y, x, grad_w, p, k, scratch)


cdef void conv2d_direct_backward_weight_f64(const double* grad_y, const double* x,
                                            double* grad_w, const ConvParams* p,
                                            Py_ssize_t k, double* scratch) noexcept nogil:
    _direct_backward_weight(grad_y, x, grad_w, p, k, scratch)


# -- im2col + GEMM -------------------------------------------------------------
# The workers run single-threaded here (split=False, 1 thread): the caller's
# prange owns the threads.

cdef inline void _gemm_forward(const floating* x, const floating* w,
                               const floating* bias, floating* y,
                               const ConvParams* p, Py_ssize_t n,
                               floating* col) noexcept nogil:
    cdef Py_ssize_t g
    for g in range(p.groups):
        _forward_item(x, w, bias, y, p, n * p.groups + g, col, False, 1)


cdef inline void _gemm_backward_data(const floating* grad_y, const floating* w,
                                     floating* grad_x, const ConvParams* p,
                                     Py_ssize_t n, floating* col) noexcept nogil:
    cdef Py_ssize_t g
    for g in range(p.groups):
        # x is not read when no weight gradient is asked for.
        _backward_item(grad_y, NULL, w, grad_x, NULL, p, n, g, col, False, 1)


cdef inline void _gemm_backward_weight(const floating* grad_y, const floating* x,
                                       floating* grad_w, const ConvParams* p,
                                       Py_ssize_t n, floating* col) noexcept nogil:
    cdef Py_ssize_t g
    for g in range(p.groups):
        # w is not read when no input gradient is asked for; grad_w (w's
        # shape) stands in so that the worker's w + offset stays a valid
        # pointer rather than arithmetic on NULL.
        _backward_item(grad_y, x, grad_w, NULL, grad_w, p, n, g, col, False, 1)


cdef Py_ssize_t conv2d_gemm_scratch_size(const ConvParams* p) noexcept nogil:
    return _column_size(p)


cdef void conv2d_gemm_forward_f32(const float* x, const float* w,
                                  const float* bias, float* y,
                                  const ConvParams* p, Py_ssize_t n,
                                  float* col) noexcept nogil:
    _gemm_forward(x, w, bias, y, p, n, col)


cdef void conv2d_gemm_forward_f64(const double* x, const double* w,
                                  const double* bias, double* y,
                                  const ConvParams* p, Py_ssize_t n,
                                  double* col) noexcept nogil:
    _gemm_forward(x, w, bias, y, p, n, col)


cdef void conv2d_gemm_backward_data_f32(const float* grad_y, const float* w,
                                        float* grad_x, const ConvParams* p,
                                        Py_ssize_t n, float* col) noexcept nogil:
    _gemm_backward_data(grad_y, w, grad_x, p, n, col)


cdef void conv2d_gemm_backward_data_f64(const double* grad_y, const double* w,
                                        double* grad_x, const ConvParams* p,
                                        Py_ssize_t n, double* col) noexcept nogil:
    _gemm_backward_data(grad_y, w, grad_x, p, n, col)


cdef void conv2d_gemm_backward_weight_f32(const float* grad_y, const float* x,
                                          float* grad_w, const ConvParams* p,
                                          Py_ssize_t n, float* col) noexcept nogil:
    _gemm_backward_weight(grad_y, x, grad_w, p, n, col)


cdef void conv2d_gemm_backward_weight_f64(const double* grad_y, const double* x,
                                          double* grad_w, const ConvParams* p,
                                          Py_ssize_t n, double* col) noexcept nogil:
    _gemm_backward_weight(grad_y, x, grad_w, p, n, col)


# -- pooling: the pool.pyx plane workers, per dtype ----------------------------

cdef void max_pool2d_plane_f32(const float* x, float* y, int64_t* idx,
                               const PoolParams* p) noexcept nogil:
    max_pool_plane(x, y, idx, p)


cdef void max_pool2d_plane_f64(const double* x, double* y, int64_t* idx,
                               const PoolParams* p) noexcept nogil:
    max_pool_plane(x, y, idx, p)


cdef void adaptive_max_pool2d_plane_f32(const float* x, float* y, int64_t* idx,
                                        const PoolParams* p) noexcept nogil:
    adaptive_max_plane(x, y, idx, p)


cdef void adaptive_max_pool2d_plane_f64(const double* x, double* y, int64_t* idx,
                                        const PoolParams* p) noexcept nogil:
    adaptive_max_plane(x, y, idx, p)


cdef void max_pool2d_backward_plane_f32(const float* grad_y, const int64_t* idx,
                                        float* grad_x, Py_ssize_t in_plane,
                                        Py_ssize_t out_plane) noexcept nogil:
    max_unpool_plane(grad_y, idx, grad_x, in_plane, out_plane)


cdef void max_pool2d_backward_plane_f64(const double* grad_y, const int64_t* idx,
                                        double* grad_x, Py_ssize_t in_plane,
                                        Py_ssize_t out_plane) noexcept nogil:
    max_unpool_plane(grad_y, idx, grad_x, in_plane, out_plane)


cdef void avg_pool2d_plane_f32(const float* x, float* y, const PoolParams* p,
                               bint count_include_pad) noexcept nogil:
    avg_pool_plane(x, y, p, count_include_pad)


cdef void avg_pool2d_plane_f64(const double* x, double* y, const PoolParams* p,
                               bint count_include_pad) noexcept nogil:
    avg_pool_plane(x, y, p, count_include_pad)


cdef void avg_pool2d_backward_plane_f32(const float* grad_y, float* grad_x,
                                        const PoolParams* p,
                                        bint count_include_pad) noexcept nogil:
    avg_pool_backward_plane(grad_y, grad_x, p, count_include_pad)


cdef void avg_pool2d_backward_plane_f64(const double* grad_y, double* grad_x,
                                        const PoolParams* p,
                                        bint count_include_pad) noexcept nogil:
    avg_pool_backward_plane(grad_y, grad_x, p, count_include_pad)


cdef void adaptive_avg_pool2d_plane_f32(const float* x, float* y,
                                        const PoolParams* p) noexcept nogil:
    adaptive_avg_plane(x, y, p)


cdef void adaptive_avg_pool2d_plane_f64(const double* x, double* y,
                                        const PoolParams* p) noexcept nogil:
    adaptive_avg_plane(x, y, p)


cdef void adaptive_avg_pool2d_backward_plane_f32(const float* grad_y, float* grad_x,
                                                 const PoolParams* p) noexcept nogil:
    adaptive_avg_backward_plane(grad_y, grad_x, p)


cdef void adaptive_avg_pool2d_backward_plane_f64(const double* grad_y, double* grad_x,
                                                 const PoolParams* p) noexcept nogil:
    adaptive_avg_backward_plane(grad_y, grad_x, p)


# -- batch norm: the batchnorm.pyx channel reductions, per dtype ----------------

cdef void batch_norm_channel_stats_f32(const float* x, Py_ssize_t N, Py_ssize_t C,
                                       Py_ssize_t S, Py_ssize_t c, double* mean,
                                       double* var) noexcept nogil:
    channel_stats(x, N, C, S, c, mean, var)


cdef void batch_norm_channel_stats_f64(const double* x, Py_ssize_t N, Py_ssize_t C,
                                       Py_ssize_t S, Py_ssize_t c, double* mean,
                                       double* var) noexcept nogil:
    channel_stats(x, N, C, S, c, mean, var)


cdef void batch_norm_channel_grad_sums_f32(const float* grad_y, const float* x,
                                           Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                                           Py_ssize_t c, double mean, double* sum_g,
                                           double* sum_gd) noexcept nogil:
    channel_grad_sums(grad_y, x, N, C, S, c, mean, sum_g, sum_gd)


cdef void batch_norm_channel_grad_sums_f64(const double* grad_y, const double* x,
                                           Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                                           Py_ssize_t c, double mean, double* sum_g,
                                           double* sum_gd) noexcept nogil:
    channel_grad_sums(grad_y, x, N, C, S, c, mean, sum_g, sum_gd)


# -- local response norm: the lrn.pyx block workers, per dtype -----------------

cdef void lrn_forward_block_f32(const float* x, float* y, const LrnParams* p,
                                Py_ssize_t s0, Py_ssize_t L,
                                double* scratch) noexcept nogil:
    lrn_forward_block(x, y, p, s0, L, scratch)


cdef void lrn_forward_block_f64(const double* x, double* y, const LrnParams* p,
                                Py_ssize_t s0, Py_ssize_t L,
                                double* scratch) noexcept nogil:
    lrn_forward_block(x, y, p, s0, L, scratch)


cdef void lrn_backward_block_f32(const float* grad_y, const float* x,
                                 float* grad_x, const LrnParams* p,
                                 Py_ssize_t s0, Py_ssize_t L,
                                 double* scratch) noexcept nogil:
    lrn_backward_block(grad_y, x, grad_x, p, s0, L, scratch)


cdef void lrn_backward_block_f64(const double* grad_y, const double* x,
                                 double* grad_x, const LrnParams* p,
                                 Py_ssize_t s0, Py_ssize_t L,
                                 double* scratch) noexcept nogil:
    lrn_backward_block(grad_y, x, grad_x, p, s0, L, scratch)
