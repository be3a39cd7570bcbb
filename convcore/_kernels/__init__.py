"""Floor 1: nogil arithmetic (Cython + OpenMP + BLAS).

Kernels trust their inputs: every check lives in floor 2
(convcore.functional, convcore.algorithms, convcore.utils.validation).
Extension modules (one .pyx each):

    native          float32/float64 entry points of the public C API (cimport
                    convcore.native; see convcore/native.pxd)
    openmp_info     whether OpenMP was compiled in, build flags, omp threads
    fpenv           flush-to-zero / denormals-are-zero in the kernels' threads
    blas            fused-type _gemm over scipy.linalg.cython_blas (row-major)
    im2col          im2col / col2im for one image and one group
    conv_direct     direct convolution forward / backward (data, weight, bias)
    conv_depthwise  depthwise (one input channel per group) forward / backward
    conv_gemm       im2col + GEMM convolution forward / backward
    conv_winograd   Winograd F(2x2, 3x3) forward (backward-data reuses it)
    conv_winograd4  Winograd F(4x4, 3x3), the same interface
    pool            max / avg / adaptive pooling forward / backward
    batchnorm       batch-norm statistics, normalisation, backward
    lrn             local response normalisation forward / backward
    norm            group / layer / instance norm forward / backward
    activation      relu forward / backward

Declarations only (.pxd, cimported by the modules above):

    conv_params     the geometry of one convolution, in plain C types
    partials        fixed partial sums for weight gradients (deterministic)
    _simd           row loops and vectorisable sums of the direct kernels
    _openmp         OpenMP calls with serial stubs when OpenMP is absent
"""
