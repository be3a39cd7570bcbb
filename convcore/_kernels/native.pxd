# convcore's native kernel API: concrete float32 (_f32) and float64 (_f64)
# entry points over plain C types, callable without the GIL from other
# Cython extensions. Downstream code cimports them through the stable public
# name `convcore.native` (convcore/native.pxd), which documents the rules
# that hold for every function below; this file adds each one's contract.
#
# Why concrete functions, not the fused `floating` workers they wrap: a
# fused cdef function crosses modules under a Cython-generated, per-version
# mangled name; free functions with fixed C signatures stay ABI-stable (as
# thinc's cblas.pxd). Cython checks each signature when a downstream module
# is imported; CONVCORE_ABI_VERSION covers what it cannot see (struct
# layouts, meanings).
from libc.stdint cimport int64_t
from convcore._kernels.conv_params cimport ConvParams, make_params
from convcore._kernels.pool cimport PoolParams
from convcore._kernels.lrn cimport LrnParams, lrn_params, lrn_scratch_size

# -- ABI ---------------------------------------------------------------------
# Bumped whenever a struct layout or the meaning of an entry point changes.
# This value is compiled into the downstream module; check_abi compares it
# with the one compiled into the installed convcore.
cdef enum:
    CONVCORE_ABI_VERSION = 1

# The ABI version of the installed convcore (the runtime side).
cdef int abi_version() noexcept nogil

# Raises ImportError naming both versions unless compiled_version equals the
# installed convcore's ABI version. Needs the GIL.
cdef int check_abi(int compiled_version) except -1


cdef inline int import_convcore_native() except -1:
    """Call once at the top of a downstream module (like numpy's
    import_array): refuses, with ImportError, to run against a convcore
    whose kernel ABI differs from the one this module was compiled with."""
    return check_abi(CONVCORE_ABI_VERSION)


# -- Geometry ----------------------------------------------------------------

cdef inline Py_ssize_t conv2d_output_size(Py_ssize_t in_size, Py_ssize_t kernel,
                                          Py_ssize_t stride, Py_ssize_t pad,
                                          Py_ssize_t dilation) noexcept nogil:
    """Output length of a convolution or pooling window along one axis with
    `pad` on both sides (PyTorch's formula); 0 when the window does not fit
    the padded input (check for it). The early return keeps the result
    independent of the including module's cdivision setting."""
    cdef Py_ssize_t span = in_size + 2 * pad - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    return span // stride + 1


cdef inline ConvParams conv2d_params(
        Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
        Py_ssize_t K, Py_ssize_t R, Py_ssize_t S,
        Py_ssize_t stride_h, Py_ssize_t stride_w,
        Py_ssize_t pad_h, Py_ssize_t pad_w,
        Py_ssize_t dil_h, Py_ssize_t dil_w,
        Py_ssize_t groups) noexcept nogil:
    """ConvParams with OH/OW computed for symmetric padding. For PyTorch's
    padding="same" with an odd total, set pad_* to the top/left part and
    OH/OW to the input size yourself."""
    return make_params(N, C, H, W, K, R, S,
                       conv2d_output_size(H, R, stride_h, pad_h, dil_h),
                       conv2d_output_size(W, S, stride_w, pad_w, dil_w),
                       stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups)


# -- Convolution, direct (no im2col, no BLAS) -----------------------------------
# Shapes: x (N, C, H, W), w (K, C/groups, R, S), bias (K,) or NULL,
# y / grad_y (N, K, OH, OW), grad_x like x, grad_w like w.

# y[n] (K, OH, OW), overwritten, for one image n. No scratch.
cdef void conv2d_direct_forward_f32(const float* x, const float* w,
                                    const float* bias, float* y,
                                    const ConvParams* p, Py_ssize_t n) noexcept nogil
cdef void conv2d_direct_forward_f64(const double* x, const double* w,
                                    const double* bias, double* y,
                                    const ConvParams* p, Py_ssize_t n) noexcept nogil

# grad_x[n] (C, H, W), overwritten, for one image n. No scratch.
cdef void conv2d_direct_backward_data_f32(const float* grad_y, const float* w,
                                          float* grad_x, const ConvParams* p,
                                          Py_ssize_t n) noexcept nogil
cdef void conv2d_direct_backward_data_f64(const double* grad_y, const double* w,
                                          double* grad_x, const ConvParams* p,
                                          Py_ssize_t n) noexcept nogil

# grad_w[k] (C/groups, R, S), overwritten, for one output channel k, summed
# over all N images in image order (so it is the same at any thread count).
# Parallelise over k. scratch: conv2d_direct_weight_scratch_size(p)
# elements, private to the calling thread.
cdef Py_ssize_t conv2d_direct_weight_scratch_size(const ConvParams* p) noexcept nogil
cdef void conv2d_direct_backward_weight_f32(const float* grad_y, const float* x,
                                            float* grad_w, const ConvParams* p,
                                            Py_ssize_t k, float* scratch) noexcept nogil
cdef void conv2d_direct_backward_weight_f64(const double* grad_y, const double* x,
                                            double* grad_w, const ConvParams* p,
                                            Py_ssize_t k, double* scratch) noexcept nogil


# -- Convolution, im2col + GEMM (scipy's BLAS), one image per call -----------
# col: conv2d_gemm_scratch_size(p) elements, private to the calling thread
# (0 for a 1x1, stride-1, unpadded convolution: col may then be NULL).
# Every GEMM dimension must fit a C int (< 2**31). Inside your own prange,
# hold the BLAS to one thread (threadpoolctl.threadpool_limits(1, "blas")
# around the parallel call) or its threads and yours oversubscribe the cores.
cdef Py_ssize_t conv2d_gemm_scratch_size(const ConvParams* p) noexcept nogil

# y[n] (K, OH, OW), overwritten, for one image n.
cdef void conv2d_gemm_forward_f32(const float* x, const float* w,
                                  const float* bias, float* y,
                                  const ConvParams* p, Py_ssize_t n,
                                  float* col) noexcept nogil
cdef void conv2d_gemm_forward_f64(const double* x, const double* w,
                                  const double* bias, double* y,
                                  const ConvParams* p, Py_ssize_t n,
                                  double* col) noexcept nogil

# grad_x[n] (C, H, W), overwritten, for one image n.
cdef void conv2d_gemm_backward_data_f32(const float* grad_y, const float* w,
                                        float* grad_x, const ConvParams* p,
                                        Py_ssize_t n, float* col) noexcept nogil
cdef void conv2d_gemm_backward_data_f64(const double* grad_y, const double* w,
                                        double* grad_x, const ConvParams* p,
                                        Py_ssize_t n, double* col) noexcept nogil

# grad_w (K, C/groups, R, S) += the weight gradient of image n alone: zero
# grad_w first; concurrent calls must add into different buffers (e.g. one
# partial sum per thread, added up afterwards).
cdef void conv2d_gemm_backward_weight_f32(const float* grad_y, const float* x,
                                          float* grad_w, const ConvParams* p,
                                          Py_ssize_t n, float* col) noexcept nogil
cdef void conv2d_gemm_backward_weight_f64(const double* grad_y, const double* x,
                                          double* grad_w, const ConvParams* p,
                                          Py_ssize_t n, double* col) noexcept nogil



# -- Pooling, one (n, c) plane per call ------------------------------------------
# x / grad_x point at one input plane (H, W), y / idx / grad_y at its output
# plane (OH, OW): plane nc of an NCHW array starts at nc*H*W (nc*OH*OW).
# No scratch; planes are independent, so parallelise over N*C. Window rules,
# divisors and NaN handling are PyTorch's (see convcore/_kernels/pool.pxd).
# Preconditions: kernel, stride, dilation >= 1; 0 <= padding <= kernel // 2;
# OH, OW >= 1.

cdef inline PoolParams pool2d_params(
        Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
        Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """PoolParams with OH/OW for ceil_mode=False. For ceil_mode=True set
    OH/OW afterwards as PyTorch computes them."""
    cdef PoolParams p
    p.H = H; p.W = W
    p.OH = conv2d_output_size(H, kh, sh, ph, dh)
    p.OW = conv2d_output_size(W, kw, sw, pw, dw)
    p.kh = kh; p.kw = kw; p.sh = sh; p.sw = sw
    p.ph = ph; p.pw = pw; p.dh = dh; p.dw = dw
    return p


cdef inline PoolParams adaptive_pool2d_params(Py_ssize_t H, Py_ssize_t W,
                                              Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """PoolParams for the adaptive poolings, which read only the sizes."""
    cdef PoolParams p = pool2d_params(H, W, 1, 1, 1, 1, 0, 0, 1, 1)
    p.OH = OH
    p.OW = OW
    return p


# y = max over each window; idx (may be NULL) = flat index h*W + w of the
# max within the input plane, -1 for a window with no tap inside the input.
cdef void max_pool2d_plane_f32(const float* x, float* y, int64_t* idx,
                               const PoolParams* p) noexcept nogil
cdef void max_pool2d_plane_f64(const double* x, double* y, int64_t* idx,
                               const PoolParams* p) noexcept nogil
cdef void adaptive_max_pool2d_plane_f32(const float* x, float* y, int64_t* idx,
                                        const PoolParams* p) noexcept nogil
cdef void adaptive_max_pool2d_plane_f64(const double* x, double* y, int64_t* idx,
                                        const PoolParams* p) noexcept nogil

# grad_x (in_plane = H*W values, overwritten) = grad_y (out_plane = OH*OW
# values) scattered through idx (each in [-1, in_plane)); serves max and
# adaptive max pooling.
cdef void max_pool2d_backward_plane_f32(const float* grad_y, const int64_t* idx,
                                        float* grad_x, Py_ssize_t in_plane,
                                        Py_ssize_t out_plane) noexcept nogil
cdef void max_pool2d_backward_plane_f64(const double* grad_y, const int64_t* idx,
                                        double* grad_x, Py_ssize_t in_plane,
                                        Py_ssize_t out_plane) noexcept nogil

# Average pooling (zero padding; divisor per count_include_pad) and its
# gradient (grad_x overwritten).
cdef void avg_pool2d_plane_f32(const float* x, float* y, const PoolParams* p,
                               bint count_include_pad) noexcept nogil
cdef void avg_pool2d_plane_f64(const double* x, double* y, const PoolParams* p,
                               bint count_include_pad) noexcept nogil
cdef void avg_pool2d_backward_plane_f32(const float* grad_y, float* grad_x,
                                        const PoolParams* p,
                                        bint count_include_pad) noexcept nogil
cdef void avg_pool2d_backward_plane_f64(const double* grad_y, double* grad_x,
                                        const PoolParams* p,
                                        bint count_include_pad) noexcept nogil

# Adaptive average pooling and its gradient (grad_x overwritten).
cdef void adaptive_avg_pool2d_plane_f32(const float* x, float* y,
                                        const PoolParams* p) noexcept nogil
cdef void adaptive_avg_pool2d_plane_f64(const double* x, double* y,
                                        const PoolParams* p) noexcept nogil
cdef void adaptive_avg_pool2d_backward_plane_f32(const float* grad_y, float* grad_x,
                                                 const PoolParams* p) noexcept nogil
cdef void adaptive_avg_pool2d_backward_plane_f64(const double* grad_y, double* grad_x,
                                                 const PoolParams* p) noexcept nogil


# -- Batch norm: per-channel reductions, in double -------------------------------
# x / grad_y viewed as (N, C, S) (S = 1, L or H*W), C-contiguous; one call
# per channel c, so parallelise over C; results in double whatever the dtype.
# The elementwise passes are one line each (see the README section "Using convcore from Cython"):
#   y = (x - mean) * invstd * weight + bias,      invstd = 1/sqrt(var + eps)
#   training grad_x = weight * invstd / M * (M * grad_y - sum_g
#                     - (x - mean) * invstd**2 * sum_gd),   M = N * S
#   grad_weight = sum_gd * invstd,  grad_bias = sum_g

# mean and biased variance of channel c (two passes: mean, then squared
# deviations from it). N * S >= 1.
cdef void batch_norm_channel_stats_f32(const float* x, Py_ssize_t N, Py_ssize_t C,
                                       Py_ssize_t S, Py_ssize_t c, double* mean,
                                       double* var) noexcept nogil
cdef void batch_norm_channel_stats_f64(const double* x, Py_ssize_t N, Py_ssize_t C,
                                       Py_ssize_t S, Py_ssize_t c, double* mean,
                                       double* var) noexcept nogil

# sum_g = sum(grad_y), sum_gd = sum(grad_y * (x - mean)) over channel c.
cdef void batch_norm_channel_grad_sums_f32(const float* grad_y, const float* x,
                                           Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                                           Py_ssize_t c, double mean, double* sum_g,
                                           double* sum_gd) noexcept nogil
cdef void batch_norm_channel_grad_sums_f64(const double* grad_y, const double* x,
                                           Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                                           Py_ssize_t c, double mean, double* sum_g,
                                           double* sum_gd) noexcept nogil


# -- Local response norm (across channels), one block of positions per call ---
# x, y, grad_y, grad_x point at one image, viewed as (C, S) (S = H*W); a
# call handles spatial positions [s0, s0 + L) of every channel, so
# parallelise over (image, block) pairs. scratch: lrn_scratch_size(p, L,
# backward) doubles, private to the calling thread. Blocks of a few hundred
# positions keep the scratch in cache (convcore uses 256).

# y (forward) or grad_x (backward) at positions [s0, s0 + L), overwritten.
cdef void lrn_forward_block_f32(const float* x, float* y, const LrnParams* p,
                                Py_ssize_t s0, Py_ssize_t L,
                                double* scratch) noexcept nogil
cdef void lrn_forward_block_f64(const double* x, double* y, const LrnParams* p,
                                Py_ssize_t s0, Py_ssize_t L,
                                double* scratch) noexcept nogil
cdef void lrn_backward_block_f32(const float* grad_y, const float* x,
                                 float* grad_x, const LrnParams* p,
                                 Py_ssize_t s0, Py_ssize_t L,
                                 double* scratch) noexcept nogil
cdef void lrn_backward_block_f64(const double* grad_y, const double* x,
                                 double* grad_x, const LrnParams* p,
                                 Py_ssize_t s0, Py_ssize_t L,
                                 double* scratch) noexcept nogil
