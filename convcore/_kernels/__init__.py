"""Floor 1: nogil arithmetic (Cython + OpenMP + BLAS).

Kernels trust their inputs: every check lives in floor 2
(convcore.functional, convcore.algorithms, convcore.utils.validation).
Extension modules (one .pyx each; their C row loops in the .h headers beside
them):

    native            float32/float64 entry points of the public C API
                      (cimport convcore.native; generated from
                      native_entry_points.py and the .tp templates)
    conv_geometry     ConvGeometry: one convolution's ConvParams, built once
    openmp_info       whether OpenMP was compiled in, build flags, omp threads
    fpenv             flush-to-zero / denormals-are-zero per thread (fpenv.h)
    blas              fused-type _gemm over scipy.linalg.cython_blas (row-major)
    im2col            im2col / col2im for one image and one group (im2col.h)
    conv_direct       direct convolution forward / backward (data, weight, bias)
    conv_depthwise    depthwise (one input channel per group) forward /
                      backward (depthwise.h)
    conv_gemm         im2col + GEMM convolution forward / backward
    winograd          Winograd F(2x2, 3x3) and F(4x4, 3x3) forward / backward
                      (one driver; each tile's transforms in winograd.h)
    pool              max / avg / adaptive pooling forward / backward (pool.h)
    batchnorm         batch-norm statistics, normalisation (with a fused
                      residual and ReLU), backward (batchnorm.h)
    group_layer_norm  group / layer / instance norm forward / backward
    lrn               local response normalisation forward / backward
    activation        relu forward / backward, tanh and sigmoid backward
    optim             SGD and Adam updates, one pass per parameter

Declarations only (.pxd, cimported by the modules above):

    conv_params       the geometry of one convolution, in plain C types
    partials          fixed partial sums for weight gradients (deterministic)
    finite            all_finite, the direct kernels' check of their weights
    _simd             row loops of the direct kernels (simd.h)
    _row_reductions   the one row-reduction family (row_reductions.h)
    _openmp           OpenMP calls with serial stubs (openmp_stubs.h)

Shared C: simd.h (load-time AVX2 copies, row axpy), openmp_stubs.h (serial
builds), row_reductions.h (the sums of pooling and every norm).
"""
