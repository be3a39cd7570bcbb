"""A downstream Cython module that calls convcore's kernels without the GIL
from its own prange loops, through the public C API `convcore.native`:
convolution (direct and im2col+GEMM, forward and backward, prange over
images or filters), pooling (prange over planes), batch-norm statistics
(prange over channels) and local response norm (prange over blocks),
float32 and float64 through fused memoryviews.

Arrays are checked here only as far as the example needs; real code should
validate as convcore.functional does (the kernels trust their inputs).
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t

import numpy as np
from threadpoolctl import threadpool_limits

from convcore.native cimport (
    ConvParams, conv2d_params, CONVCORE_ABI_VERSION, import_convcore_native,
    conv2d_direct_forward_f32, conv2d_direct_forward_f64,
    conv2d_direct_backward_data_f32, conv2d_direct_backward_data_f64,
    conv2d_direct_weight_scratch_size,
    conv2d_direct_backward_weight_f32, conv2d_direct_backward_weight_f64,
    conv2d_gemm_scratch_size,
    conv2d_gemm_forward_f32, conv2d_gemm_forward_f64,
    conv2d_gemm_backward_data_f32, conv2d_gemm_backward_data_f64,
    conv2d_gemm_backward_weight_f32, conv2d_gemm_backward_weight_f64,
    PoolParams, pool2d_params, adaptive_pool2d_params,
    max_pool2d_plane_f32, max_pool2d_plane_f64,
    adaptive_max_pool2d_plane_f32, adaptive_max_pool2d_plane_f64,
    max_pool2d_backward_plane_f32, max_pool2d_backward_plane_f64,
    avg_pool2d_plane_f32, avg_pool2d_plane_f64,
    avg_pool2d_backward_plane_f32, avg_pool2d_backward_plane_f64,
    adaptive_avg_pool2d_plane_f32, adaptive_avg_pool2d_plane_f64,
    adaptive_avg_pool2d_backward_plane_f32, adaptive_avg_pool2d_backward_plane_f64,
    batch_norm_channel_stats_f32, batch_norm_channel_stats_f64,
    batch_norm_channel_grad_sums_f32, batch_norm_channel_grad_sums_f64,
    LrnParams, lrn_params, lrn_scratch_size,
    lrn_forward_block_f32, lrn_forward_block_f64,
    lrn_backward_block_f32, lrn_backward_block_f64,
)

# Refuse to run against a convcore with another kernel ABI (ImportError).
import_convcore_native()
COMPILED_ABI_VERSION = CONVCORE_ABI_VERSION


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


cdef ConvParams _geometry(tuple x_shape, tuple w_shape, stride, padding,
                          dilation, Py_ssize_t groups) except *:
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x_shape
    K, Cg, R, S = w_shape
    if Cg * groups != C or K % groups:
        raise ValueError(f"weight {w_shape} does not fit input {x_shape} "
                         f"with groups={groups}")
    cdef ConvParams p = conv2d_params(N, C, H, W, K, R, S, sh, sw, ph, pw,
                                      dh, dw, groups)
    if p.OH < 1 or p.OW < 1:
        raise ValueError(f"kernel {(R, S)} larger than the padded input {(H, W)}")
    return p


def conv2d(floating[:, :, :, ::1] x, floating[:, :, :, ::1] w, bias=None,
           stride=1, padding=0, dilation=1, int groups=1,
           str algorithm="gemm", int num_threads=2):
    """Forward convolution; prange over images. algorithm: "direct"/"gemm"."""
    cdef ConvParams p = _geometry(np.shape(x), np.shape(w), stride, padding, dilation, groups)
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, :, :, ::1] y = np.empty((p.N, p.K, p.OH, p.OW), dtype)
    cdef floating[::1] b = None if bias is None else np.ascontiguousarray(bias, dtype)
    cdef const floating* bp = NULL if bias is None else &b[0]
    # One column buffer per thread, allocated here with the GIL (size 0 for
    # a pointwise convolution, which needs none).
    cdef Py_ssize_t colsize = conv2d_gemm_scratch_size(&p)
    cdef floating[:, ::1] cols = np.empty((num_threads, max(colsize, 1)), dtype)
    cdef bint gemm = algorithm == "gemm"
    cdef Py_ssize_t n
    with threadpool_limits(1, "blas"):  # our prange owns the threads
        with nogil:
            for n in prange(p.N, schedule="static", num_threads=num_threads):
                if floating is float:
                    if gemm:
                        conv2d_gemm_forward_f32(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp,
                                                &y[0, 0, 0, 0], &p, n,
                                                &cols[threadid(), 0])
                    else:
                        conv2d_direct_forward_f32(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp,
                                                  &y[0, 0, 0, 0], &p, n)
                else:
                    if gemm:
                        conv2d_gemm_forward_f64(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp,
                                                &y[0, 0, 0, 0], &p, n,
                                                &cols[threadid(), 0])
                    else:
                        conv2d_direct_forward_f64(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp,
                                                  &y[0, 0, 0, 0], &p, n)
    return np.asarray(y)


def conv2d_backward(floating[:, :, :, ::1] grad_y, floating[:, :, :, ::1] x,
                    floating[:, :, :, ::1] w, stride=1, padding=0, dilation=1,
                    int groups=1, str algorithm="gemm", int num_threads=2):
    """(grad_x, grad_w). grad_x: prange over images. grad_w: "direct" runs
    prange over filters (each summed over the batch); "gemm" gives every
    thread its own partial sum over its images, added up at the end."""
    cdef ConvParams p = _geometry(np.shape(x), np.shape(w), stride, padding, dilation, groups)
    if np.shape(grad_y) != (p.N, p.K, p.OH, p.OW):
        raise ValueError(f"grad_y {np.shape(grad_y)} does not match "
                         f"the output {(p.N, p.K, p.OH, p.OW)}")
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, :, :, ::1] gx = np.empty_like(np.asarray(x))
    cdef floating[:, :, :, :, ::1] partial = np.zeros((num_threads, p.K, p.C // p.groups, p.R, p.S), dtype)
    cdef bint gemm = algorithm == "gemm"
    cdef Py_ssize_t size = (conv2d_gemm_scratch_size(&p) if gemm
                            else conv2d_direct_weight_scratch_size(&p))
    cdef floating[:, ::1] scratch = np.empty((num_threads, max(size, 1)), dtype)
    cdef Py_ssize_t n, k
    with threadpool_limits(1, "blas"):
        with nogil:
            for n in prange(p.N, schedule="static", num_threads=num_threads):
                if floating is float:
                    if gemm:
                        conv2d_gemm_backward_data_f32(&grad_y[0, 0, 0, 0], &w[0, 0, 0, 0],
                                                      &gx[0, 0, 0, 0], &p, n,
                                                      &scratch[threadid(), 0])
                        conv2d_gemm_backward_weight_f32(&grad_y[0, 0, 0, 0], &x[0, 0, 0, 0],
                                                        &partial[threadid(), 0, 0, 0, 0],
                                                        &p, n, &scratch[threadid(), 0])
                    else:
                        conv2d_direct_backward_data_f32(&grad_y[0, 0, 0, 0], &w[0, 0, 0, 0],
                                                        &gx[0, 0, 0, 0], &p, n)
                else:
                    if gemm:
                        conv2d_gemm_backward_data_f64(&grad_y[0, 0, 0, 0], &w[0, 0, 0, 0],
                                                      &gx[0, 0, 0, 0], &p, n,
                                                      &scratch[threadid(), 0])
                        conv2d_gemm_backward_weight_f64(&grad_y[0, 0, 0, 0], &x[0, 0, 0, 0],
                                                        &partial[threadid(), 0, 0, 0, 0],
                                                        &p, n, &scratch[threadid(), 0])
                    else:
                        conv2d_direct_backward_data_f64(&grad_y[0, 0, 0, 0], &w[0, 0, 0, 0],
                                                        &gx[0, 0, 0, 0], &p, n)
            if not gemm:
                # Filters are independent: thread t writes grad_w[k] for its
                # own k, into partial[0] (no sum needed).
                for k in prange(p.K, schedule="static", num_threads=num_threads):
                    if floating is float:
                        conv2d_direct_backward_weight_f32(&grad_y[0, 0, 0, 0], &x[0, 0, 0, 0],
                                                          &partial[0, 0, 0, 0, 0], &p, k,
                                                          &scratch[threadid(), 0])
                    else:
                        conv2d_direct_backward_weight_f64(&grad_y[0, 0, 0, 0], &x[0, 0, 0, 0],
                                                          &partial[0, 0, 0, 0, 0], &p, k,
                                                          &scratch[threadid(), 0])
    gw = np.asarray(partial).sum(axis=0) if gemm else np.asarray(partial[0]).copy()
    return np.asarray(gx), gw


# -- pooling: prange over the N*C planes ----------------------------------------

cdef enum PoolKind:
    MAX, ADAPTIVE_MAX, AVG, ADAPTIVE_AVG

_POOL_KINDS = {"max": MAX, "adaptive_max": ADAPTIVE_MAX, "avg": AVG,
               "adaptive_avg": ADAPTIVE_AVG}


cdef void _pool_plane(PoolKind kind, const floating* x, floating* y, int64_t* idx,
                      const PoolParams* p, bint count_include_pad) noexcept nogil:
    if floating is float:
        if kind == MAX:
            max_pool2d_plane_f32(x, y, idx, p)
        elif kind == ADAPTIVE_MAX:
            adaptive_max_pool2d_plane_f32(x, y, idx, p)
        elif kind == AVG:
            avg_pool2d_plane_f32(x, y, p, count_include_pad)
        else:
            adaptive_avg_pool2d_plane_f32(x, y, p)
    else:
        if kind == MAX:
            max_pool2d_plane_f64(x, y, idx, p)
        elif kind == ADAPTIVE_MAX:
            adaptive_max_pool2d_plane_f64(x, y, idx, p)
        elif kind == AVG:
            avg_pool2d_plane_f64(x, y, p, count_include_pad)
        else:
            adaptive_avg_pool2d_plane_f64(x, y, p)


cdef void _pool_backward_plane(PoolKind kind, const floating* gy, const int64_t* idx,
                               floating* gx, const PoolParams* p,
                               bint count_include_pad) noexcept nogil:
    if floating is float:
        if kind == MAX or kind == ADAPTIVE_MAX:
            max_pool2d_backward_plane_f32(gy, idx, gx, p.H * p.W, p.OH * p.OW)
        elif kind == AVG:
            avg_pool2d_backward_plane_f32(gy, gx, p, count_include_pad)
        else:
            adaptive_avg_pool2d_backward_plane_f32(gy, gx, p)
    else:
        if kind == MAX or kind == ADAPTIVE_MAX:
            max_pool2d_backward_plane_f64(gy, idx, gx, p.H * p.W, p.OH * p.OW)
        elif kind == AVG:
            avg_pool2d_backward_plane_f64(gy, gx, p, count_include_pad)
        else:
            adaptive_avg_pool2d_backward_plane_f64(gy, gx, p)


cdef PoolParams _pool_geometry(str kind, Py_ssize_t H, Py_ssize_t W, window) except *:
    """window: (kernel, stride, padding, dilation) for max/avg (stride None
    = kernel), or the output size (OH, OW) for the adaptive kinds."""
    if kind.startswith("adaptive"):
        OH, OW = _pair(window)
        return adaptive_pool2d_params(H, W, OH, OW)
    kernel, stride, padding, dilation = window
    (kh, kw), (ph, pw), (dh, dw) = _pair(kernel), _pair(padding), _pair(dilation)
    sh, sw = _pair(kernel if stride is None else stride)
    cdef PoolParams p = pool2d_params(H, W, kh, kw, sh, sw, ph, pw, dh, dw)
    if p.OH < 1 or p.OW < 1 or 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"bad pooling window {window} for a {H}x{W} input")
    return p


def pool2d(str kind, floating[:, :, :, ::1] x, window,
           bint count_include_pad=True, int num_threads=2):
    """(y, indices): kind "max", "adaptive_max", "avg" or "adaptive_avg";
    indices (int64 flat h*W + w) for the max kinds, else None."""
    cdef PoolKind k = _POOL_KINDS[kind]
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], nc
    cdef PoolParams p = _pool_geometry(kind, x.shape[2], x.shape[3], window)
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, :, :, ::1] y = np.empty((N, C, p.OH, p.OW), dtype)
    cdef bint with_idx = k == MAX or k == ADAPTIVE_MAX
    # (a one-element placeholder when there are no indices)
    cdef int64_t[:, :, :, ::1] idx = np.empty(
        [N, C, p.OH, p.OW] if with_idx else [1, 1, 1, 1], dtype=np.int64)
    cdef Py_ssize_t ip = p.H * p.W, op = p.OH * p.OW
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=num_threads):
            _pool_plane(k, &x[0, 0, 0, 0] + nc * ip, &y[0, 0, 0, 0] + nc * op,
                        &idx[0, 0, 0, 0] + nc * op if with_idx else NULL,
                        &p, count_include_pad)
    return np.asarray(y), (np.asarray(idx) if with_idx else None)


def pool2d_backward(str kind, floating[:, :, :, ::1] grad_y, indices,
                    input_shape, window, bint count_include_pad=True,
                    int num_threads=2):
    """grad_x of pool2d(kind, x, window) for x of input_shape; indices from
    pool2d for the max kinds (else None)."""
    cdef PoolKind k = _POOL_KINDS[kind]
    cdef Py_ssize_t N, C, H, W
    N, C, H, W = input_shape
    cdef PoolParams p = _pool_geometry(kind, H, W, window)
    if np.shape(grad_y) != (N, C, p.OH, p.OW):
        raise ValueError(f"grad_y {np.shape(grad_y)} does not match the output")
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, :, :, ::1] gx = np.empty((N, C, H, W), dtype)
    cdef bint with_idx = k == MAX or k == ADAPTIVE_MAX
    cdef const int64_t[:, :, :, ::1] idx = (np.ascontiguousarray(indices, np.int64)
                                            if with_idx else np.empty((1, 1, 1, 1), np.int64))
    cdef Py_ssize_t ip = p.H * p.W, op = p.OH * p.OW, nc
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=num_threads):
            _pool_backward_plane(k, &grad_y[0, 0, 0, 0] + nc * op,
                                 &idx[0, 0, 0, 0] + nc * op if with_idx else NULL,
                                 &gx[0, 0, 0, 0] + nc * ip, &p, count_include_pad)
    return np.asarray(gx)


# -- batch norm (training): reductions in prange over channels, the
#    elementwise passes in NumPy -----------------------------------------------

def batch_norm_train(floating[:, :, ::1] x, weight, bias, double eps=1e-5,
                     int num_threads=2):
    """x viewed as (N, C, S). Returns (y, mean, invstd), the batch's
    statistics as torch's training-mode batch_norm uses them."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    cdef double[::1] mean = np.empty(C), var = np.empty(C)
    with nogil:
        for c in prange(C, schedule="static", num_threads=num_threads):
            if floating is float:
                batch_norm_channel_stats_f32(&x[0, 0, 0], N, C, S, c, &mean[c], &var[c])
            else:
                batch_norm_channel_stats_f64(&x[0, 0, 0], N, C, S, c, &mean[c], &var[c])
    m = np.asarray(mean)[:, None]
    invstd = 1.0 / np.sqrt(np.asarray(var) + eps)
    y = (np.asarray(x) - m) * (invstd * weight)[:, None] + np.asarray(bias)[:, None]
    return y.astype(np.asarray(x).dtype), np.asarray(mean), invstd


def batch_norm_train_backward(floating[:, :, ::1] grad_y, floating[:, :, ::1] x,
                              mean, invstd, weight, int num_threads=2):
    """(grad_x, grad_weight, grad_bias) of batch_norm_train."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    cdef const double[::1] mu = np.ascontiguousarray(mean, np.float64)
    cdef double[::1] sum_g = np.empty(C), sum_gd = np.empty(C)
    with nogil:
        for c in prange(C, schedule="static", num_threads=num_threads):
            if floating is float:
                batch_norm_channel_grad_sums_f32(&grad_y[0, 0, 0], &x[0, 0, 0], N, C, S, c,
                                                 mu[c], &sum_g[c], &sum_gd[c])
            else:
                batch_norm_channel_grad_sums_f64(&grad_y[0, 0, 0], &x[0, 0, 0], N, C, S, c,
                                                 mu[c], &sum_g[c], &sum_gd[c])
    M = N * S
    g, sg, sgd = np.asarray(grad_y), np.asarray(sum_g), np.asarray(sum_gd)
    istd = np.asarray(invstd, np.float64)
    gx = ((weight * istd / M)[:, None]
          * (M * g - sg[:, None] - (np.asarray(x) - np.asarray(mu)[:, None])
             * (istd ** 2 * sgd)[:, None]))
    return gx.astype(g.dtype), sgd * istd, sg


# -- local response norm: prange over (image, block of positions) ---------------

def local_response_norm(floating[:, :, ::1] x, Py_ssize_t size, double alpha=1e-4,
                        double beta=0.75, double k=1.0, grad_y=None,
                        Py_ssize_t block=64, int num_threads=2):
    """x viewed as (N, C, S). Returns y, or grad_x when grad_y is given."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef LrnParams p = lrn_params(C, S, size, alpha, beta, k)
    cdef bint backward = grad_y is not None
    cdef Py_ssize_t blocks = (S + block - 1) // block, item, n, s0, L
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, :, ::1] gy = (np.ascontiguousarray(grad_y, dtype) if backward
                                   else np.empty((1, 1, 1), dtype))
    cdef floating[:, :, ::1] out = np.empty((N, C, S), dtype)
    cdef Py_ssize_t per_thread = lrn_scratch_size(&p, block, backward)
    cdef double[:, ::1] scratch = np.empty((num_threads, per_thread))
    with nogil:
        for item in prange(N * blocks, schedule="static", num_threads=num_threads):
            n = item // blocks
            s0 = (item % blocks) * block
            L = min(block, S - s0)
            if floating is float:
                if backward:
                    lrn_backward_block_f32(&gy[n, 0, 0], &x[n, 0, 0], &out[n, 0, 0], &p,
                                           s0, L, &scratch[threadid(), 0])
                else:
                    lrn_forward_block_f32(&x[n, 0, 0], &out[n, 0, 0], &p, s0, L,
                                          &scratch[threadid(), 0])
            else:
                if backward:
                    lrn_backward_block_f64(&gy[n, 0, 0], &x[n, 0, 0], &out[n, 0, 0], &p,
                                           s0, L, &scratch[threadid(), 0])
                else:
                    lrn_forward_block_f64(&x[n, 0, 0], &out[n, 0, 0], &p, s0, L,
                                          &scratch[threadid(), 0])
    return np.asarray(out)
