"""A downstream Cython module that calls convcore's kernels without the GIL
from its own prange loops, through the public C API `convcore.native`.

Arrays are checked here only as far as the example needs; real code should
validate as convcore.functional does (the kernels trust their inputs).
"""
from cython cimport floating
from cython.parallel cimport prange, threadid

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
