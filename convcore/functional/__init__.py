"""Floor 2: the functional API (also `convcore.F`).

Every check lives here; kernels below trust their inputs. Arrays are NCHW
numpy float32/float64; the caller's arrays are never modified.
"""
from convcore.functional.conv import conv2d, conv2d_backward

__all__ = ["conv2d", "conv2d_backward"]
from convcore.functional.pooling import (
    adaptive_avg_pool2d, adaptive_avg_pool2d_backward, adaptive_max_pool2d,
    adaptive_max_pool2d_backward, avg_pool2d, avg_pool2d_backward, max_pool2d,
    max_pool2d_backward)

__all__ += ["max_pool2d", "max_pool2d_backward", "avg_pool2d",
            "avg_pool2d_backward", "adaptive_avg_pool2d",
            "adaptive_avg_pool2d_backward", "adaptive_max_pool2d",
            "adaptive_max_pool2d_backward"]
from convcore.functional.batch_norm import (
    batch_norm, batch_norm_backward, fold_batch_norm)

__all__ += ["batch_norm", "batch_norm_backward", "fold_batch_norm"]
from convcore.functional.lrn import local_response_norm, local_response_norm_backward

__all__ += ["local_response_norm", "local_response_norm_backward"]
