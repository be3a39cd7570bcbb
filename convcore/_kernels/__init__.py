"""Floor 1: nogil arithmetic (Cython + OpenMP + BLAS).

Kernels trust their inputs: every check lives in convcore.functional.
Modules:

    native        float32/float64 entry points of the public C API (cimport
                  convcore.native; see convcore/native.pxd)
    openmp_info   whether OpenMP was compiled in, build flags, omp threads
    blas          fused-type _gemm over scipy.linalg.cython_blas (row-major)
    im2col        im2col / col2im for one image and one group
    conv_direct   direct convolution forward / backward (data, weight, bias)
    conv_depthwise depthwise (one input channel per group) forward / backward
    conv_gemm     im2col + GEMM convolution forward / backward
    winograd      Winograd F(2x2, 3x3) and F(4x4, 3x3) forward / backward
                  (one driver; each tile's transforms in winograd.h)
    pool          max / avg / adaptive pooling forward / backward
    batchnorm     batch-norm statistics, normalisation, backward
    lrn           local response normalisation forward / backward
    norm          group / layer / instance norm forward / backward
    activation    relu forward / backward
"""
