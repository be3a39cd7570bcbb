"""Floor 2: the functional API (also `convcore.F`).

Every check lives here; kernels below trust their inputs. Arrays are NCHW
numpy float32/float64; the caller's arrays are never modified (batch_norm's
running statistics in training mode are the one documented exception).
Each op `f` with parameters or inputs to differentiate has `f_backward`,
which takes what the forward returned or saved and returns new arrays.

    conv.py         conv2d (algorithms: direct, im2col, winograd, auto)
    conv_transpose.py  conv_transpose2d, on the conv kernels (adjoint)
    interpolate.py  interpolate (nearest, bilinear): separable sparse resampling
    pooling.py      max/avg/adaptive pooling
    batch_norm.py   batch norm (+ ReLU, + residual), folding into a conv
    fused.py        conv epilogues: bias + ReLU in place, add + ReLU
    lrn.py          local response normalisation
    norms.py        group/layer/instance norm
    activations.py  relu, relu6, leaky_relu, sigmoid, tanh, softplus, gelu, silu,
                    softmax, log_softmax
    linear.py       linear, dropout, dropout2d
    losses.py       cross_entropy, nll_loss, mse_loss, l1_loss, smooth_l1_loss,
                    huber_loss, binary_cross_entropy_with_logits
"""
from convcore.functional.activations import (
    leaky_relu, leaky_relu_backward, log_softmax, log_softmax_backward, relu,
    relu_, relu_backward, relu_backward_, relu6, relu6_backward, sigmoid, sigmoid_backward,
    softmax, softmax_backward,
    softplus, softplus_backward, tanh, tanh_backward)
from convcore.functional.batch_norm import (
    batch_norm, batch_norm_backward, batch_norm_relu, batch_norm_relu_backward,
    fold_batch_norm)
from convcore.functional.fused import add_relu, bias_relu_, bias_relu_backward
from convcore.functional.conv import conv2d, conv2d_backward
from convcore.functional.linear import (
    dropout, dropout_backward, linear, linear_backward)
from convcore.functional.losses import (
    binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_backward,
    cross_entropy, cross_entropy_backward, mse_loss, mse_loss_backward)
from convcore.functional.lrn import (
    local_response_norm, local_response_norm_backward)
from convcore.functional.norms import (
    group_norm, group_norm_backward, instance_norm, instance_norm_backward,
    layer_norm, layer_norm_backward)
from convcore.functional.pooling import (
    adaptive_avg_pool2d, adaptive_avg_pool2d_backward, adaptive_max_pool2d,
    adaptive_max_pool2d_backward, avg_pool2d, avg_pool2d_backward, max_pool2d,
    max_pool2d_backward)
# issue 16 item 3: layers users reach for
from convcore.functional.activations import gelu, gelu_backward, silu, silu_backward
from convcore.functional.conv_transpose import conv_transpose2d, conv_transpose2d_backward
from convcore.functional.interpolate import interpolate, interpolate_backward
from convcore.functional.linear import dropout2d
from convcore.functional.losses import (
    huber_loss, huber_loss_backward, l1_loss, l1_loss_backward, nll_loss, nll_loss_backward,
    smooth_l1_loss, smooth_l1_loss_backward)

__all__ = [
    "conv2d", "conv2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d", "adaptive_max_pool2d_backward",
    "batch_norm", "batch_norm_backward", "fold_batch_norm",
    "batch_norm_relu", "batch_norm_relu_backward",
    "bias_relu_", "bias_relu_backward", "add_relu",
    "local_response_norm", "local_response_norm_backward",
    "group_norm", "group_norm_backward", "layer_norm", "layer_norm_backward",
    "instance_norm", "instance_norm_backward",
    "relu", "relu_backward", "relu_", "relu_backward_", "relu6", "relu6_backward",
    "leaky_relu", "leaky_relu_backward",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward",
    "softplus", "softplus_backward", "softmax", "softmax_backward",
    "log_softmax", "log_softmax_backward",
    "linear", "linear_backward", "dropout", "dropout_backward",
    "cross_entropy", "cross_entropy_backward", "mse_loss", "mse_loss_backward",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_backward",
]
__all__ += [
    "conv_transpose2d", "conv_transpose2d_backward", "gelu", "gelu_backward", "silu",
    "silu_backward", "dropout2d", "nll_loss", "nll_loss_backward", "l1_loss",
    "l1_loss_backward", "smooth_l1_loss", "smooth_l1_loss_backward", "huber_loss",
    "huber_loss_backward", "interpolate", "interpolate_backward",
]
