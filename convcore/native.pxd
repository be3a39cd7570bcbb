# convcore.native: the public C-level API of convcore's kernels.
#
#     from convcore.native cimport ConvParams, conv2d_params, \
#         conv2d_direct_forward_f32, import_convcore_native
#     import_convcore_native()          # once, at module import
#
# Compile against the installed convcore: cythonize(...) finds this file on
# sys.path, or pass include_path/include_dirs=[convcore.get_include()]. No
# C headers and no link flags are needed: the functions are fetched from
# the installed convcore._kernels modules when your module is imported.
# Signatures and per-function contracts: convcore/_kernels/native.pxd.
#
# Rules that hold for every entry point
# -------------------------------------
# Types      `_f32` functions take float*, `_f64` double*; sizes and indices
#            are Py_ssize_t; geometry comes in a ConvParams struct
#            (convcore/_kernels/conv_params.pxd), built by conv2d_params(),
#            or a PoolParams (convcore/_kernels/pool.pxd), built by
#            pool2d_params() / adaptive_pool2d_params(), or a LrnParams
#            (convcore/_kernels/lrn.pxd), built by lrn_params(); max-pool
#            indices are int64_t.
# Layout     every array is C-contiguous NCHW with exactly the shape that
#            the ConvParams describe: x (N, C, H, W), weight
#            (K, C/groups, R, S), bias (K,), y (N, K, OH, OW). Pooling
#            works on one (H, W) plane, batch norm on x viewed as (N, C, S),
#            local response norm on one image viewed as (C, S).
# Trust      nothing is checked (this is floor 1): C, K > 0, groups
#            dividing both, strides and dilations >= 1, padding >= 0,
#            OH, OW >= 1 and equal to conv2d_output_size(...), pointers
#            valid for those shapes, outputs not overlapping inputs. Check
#            them in Python first, or call convcore.functional, which does.
# Outputs    "overwritten" outputs need no initialisation; "+=" outputs
#            (conv2d_gemm_backward_weight_*) must be zeroed by the caller.
# Scratch    the caller owns it: allocate the documented number of elements
#            once per thread (e.g. at the top of a `with parallel()` block)
#            and free it afterwards; no entry point allocates memory.
# Threads    every entry point is nogil, noexcept, re-entrant and keeps no
#            global state; calls may run concurrently when they write
#            disjoint outputs (different images n, filters k, pooling
#            planes, batch-norm channels or LRN blocks) and use their own
#            scratch. The entry points start no threads of their own; the
#            GEMM ones call scipy's BLAS, which should be held to one thread
#            while your prange runs (threadpoolctl).
# Results    equal convcore.functional's (same workers), which equal PyTorch's.
# ABI        CONVCORE_ABI_VERSION is compiled into your module; call
#            import_convcore_native() (or check_abi(CONVCORE_ABI_VERSION))
#            at import so that a convcore with another kernel ABI is refused
#            with an ImportError naming both versions. Python side:
#            convcore.__abi_version__.
from libc.stdint cimport int64_t
from convcore._kernels.conv_params cimport ConvParams
from convcore._kernels.pool cimport PoolParams
from convcore._kernels.lrn cimport LrnParams
from convcore._kernels.native cimport (
    CONVCORE_ABI_VERSION, abi_version, check_abi, import_convcore_native,
    conv2d_output_size, conv2d_params,
    conv2d_direct_forward_f32, conv2d_direct_forward_f64,
    conv2d_direct_backward_data_f32, conv2d_direct_backward_data_f64,
    conv2d_direct_weight_scratch_size,
    conv2d_direct_backward_weight_f32, conv2d_direct_backward_weight_f64,
    conv2d_gemm_scratch_size,
    conv2d_gemm_forward_f32, conv2d_gemm_forward_f64,
    conv2d_gemm_backward_data_f32, conv2d_gemm_backward_data_f64,
    conv2d_gemm_backward_weight_f32, conv2d_gemm_backward_weight_f64,
    pool2d_params, adaptive_pool2d_params,
    max_pool2d_plane_f32, max_pool2d_plane_f64,
    adaptive_max_pool2d_plane_f32, adaptive_max_pool2d_plane_f64,
    max_pool2d_backward_plane_f32, max_pool2d_backward_plane_f64,
    avg_pool2d_plane_f32, avg_pool2d_plane_f64,
    avg_pool2d_backward_plane_f32, avg_pool2d_backward_plane_f64,
    adaptive_avg_pool2d_plane_f32, adaptive_avg_pool2d_plane_f64,
    adaptive_avg_pool2d_backward_plane_f32, adaptive_avg_pool2d_backward_plane_f64,
    batch_norm_channel_stats_f32, batch_norm_channel_stats_f64,
    batch_norm_channel_grad_sums_f32, batch_norm_channel_grad_sums_f64,
    lrn_params, lrn_scratch_size,
    lrn_forward_block_f32, lrn_forward_block_f64,
    lrn_backward_block_f32, lrn_backward_block_f64,
)
