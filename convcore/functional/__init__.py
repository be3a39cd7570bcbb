"""Floor 2: the functional API (also `convcore.F`).

Every check lives here; kernels below trust their inputs. Arrays are NCHW
numpy float32/float64; the caller's arrays are never modified.
"""
from convcore.functional.conv import conv2d, conv2d_backward

__all__ = ["conv2d", "conv2d_backward"]
from convcore.functional.norms import (
    group_norm, group_norm_backward, layer_norm, layer_norm_backward,
    instance_norm, instance_norm_backward)
__all__ += ["group_norm", "group_norm_backward", "layer_norm", "layer_norm_backward",
            "instance_norm", "instance_norm_backward"]
