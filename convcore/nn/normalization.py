"""BatchNorm1d/2d, GroupNorm, LayerNorm, LocalResponseNorm.

The normalising layers cache the input and the (mean, invstd) their
forward computed, so backward does not recompute statistics."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

from convcore.utils.layout import CHANNELS_FIRST, check_data_format, refuse_other_layout
from convcore.utils.validation import check_int
from convcore.functional.batch_norm import batch_norm, batch_norm_backward
from convcore.functional.lrn import local_response_norm, local_response_norm_backward
from convcore.functional.norms import (
    group_norm, group_norm_backward, layer_norm, layer_norm_backward)
from convcore.nn._common import data_format_repr, layer_dtype
from convcore.nn.module import Module
from convcore.nn.parameter import Parameter
from convcore.utils.types import Array


class _SameShape(Module):
    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        return tuple(input_shape)


def _affine(module, shape, dt, affine):
    if affine:
        module.weight = Parameter(np.ones(shape, dtype=dt))
        module.bias = Parameter(np.zeros(shape, dtype=dt))
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


def _accumulate(module, gw, gb):
    if module.weight is not None:
        module.weight.accumulate_grad(gw)
        module.bias.accumulate_grad(gb)


def _data(p):
    return None if p is None else p.data


class _BatchNorm(_SameShape):
    _ndims: Tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: DTypeLike = np.float32, *, data_format: str = CHANNELS_FIRST) -> None:
        super().__init__()
        name = type(self).__name__
        self.data_format = check_data_format(data_format, name)
        self.num_features = check_int(num_features, "num_features", 1, name)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dt = layer_dtype(dtype, name)
        _affine(self, self.num_features, dt, self.affine)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype=dt))
            self.register_buffer("running_var", np.ones(self.num_features, dtype=dt))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            for b in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(b, None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0
            self.bump_buffers()

    def _step_mode(self):
        """(use_batch_stats, momentum) for one forward, counting the batch
        as torch does; shared by forward and the fused paths
        (convcore.nn._fusion). A training forward writes the running
        statistics in place, so it marks the buffers changed."""
        # As torch: batch statistics in training mode, or always when no
        # running statistics are kept.
        use_batch_stats = self.training or not self.track_running_stats
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            self.bump_buffers()
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        return use_batch_stats, 0.0 if momentum is None else momentum

    def _check_input(self, x):
        if getattr(x, "ndim", None) not in self._ndims:
            dims = " or ".join(map(str, self._ndims))
            raise ValueError(f"{type(self).__name__}: expected a {dims}-D input, got "
                             f"shape {getattr(x, 'shape', None)}")

    def forward(self, x: Array) -> Array:
        self._check_input(x)
        refuse_other_layout(x, self.num_features, self.data_format, type(self).__name__)
        use_batch_stats, momentum = self._step_mode()
        y, mean, invstd = batch_norm(
            x, self.running_mean, self.running_var, _data(self.weight), _data(self.bias),
            training=use_batch_stats, momentum=momentum,
            eps=self.eps, return_stats=True, data_format=self.data_format)
        self._save_for_backward(x, mean, invstd, use_batch_stats)
        return y

    def backward(self, grad_y: Array) -> Array:
        x, mean, invstd, use_batch_stats = self._saved()
        gx, gw, gb = batch_norm_backward(
            grad_y, x, mean, invstd, _data(self.weight), training=use_batch_stats,
            data_format=self.data_format)
        _accumulate(self, gw, gb)
        return gx

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}"
                + data_format_repr(self))


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L) inputs ((N, L, C) with
    data_format="channels_last")."""
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W) inputs, or (N, H, W, C) with the keyword-only
    data_format="channels_last" (alias "NHWC"): input, output and input
    gradient in that layout, the parameters, buffers and state_dict the
    same in both. The kernels normalise NCHW: a channels-last layer
    transposes in and out (views), with the same results."""
    _ndims = (4,)


class GroupNorm(_SameShape):
    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        self.num_groups = check_int(num_groups, "num_groups", 1, "GroupNorm")
        self.num_channels = check_int(num_channels, "num_channels", 1, "GroupNorm")
        if self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: num_groups={self.num_groups} must divide "
                             f"num_channels={self.num_channels}")
        self.eps = float(eps)
        self.affine = bool(affine)
        _affine(self, self.num_channels, layer_dtype(dtype, "GroupNorm"), self.affine)

    def forward(self, x: Array) -> Array:
        y, mean, invstd = group_norm(
            x, self.num_groups, _data(self.weight), _data(self.bias), self.eps,
            return_stats=True)
        self._save_for_backward(x, mean, invstd)
        return y

    def backward(self, grad_y: Array) -> Array:
        x, mean, invstd = self._saved()
        gx, gw, gb = group_norm_backward(
            grad_y, x, self.num_groups, mean, invstd, _data(self.weight))
        _accumulate(self, gw, gb)
        return gx

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class LayerNorm(_SameShape):
    def __init__(self, normalized_shape: Union[int, Sequence[int]], eps: float = 1e-5,
                 elementwise_affine: bool = True, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(check_int(s, "normalized_shape", 1, "LayerNorm")
                                      for s in normalized_shape)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        _affine(self, self.normalized_shape, layer_dtype(dtype, "LayerNorm"),
                self.elementwise_affine)

    def forward(self, x: Array) -> Array:
        y, mean, invstd = layer_norm(
            x, self.normalized_shape, _data(self.weight), _data(self.bias), self.eps,
            return_stats=True)
        self._save_for_backward(x, mean, invstd)
        return y

    def backward(self, grad_y: Array) -> Array:
        x, mean, invstd = self._saved()
        gx, gw, gb = layer_norm_backward(
            grad_y, x, self.normalized_shape, mean, invstd, _data(self.weight))
        _accumulate(self, gw, gb)
        return gx

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class LocalResponseNorm(_SameShape):
    """AlexNet's cross-channel normalisation (torch.nn.LocalResponseNorm)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        self.size = check_int(size, "size", 1, "LocalResponseNorm")
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)
        layer_dtype(dtype, "LocalResponseNorm")

    def forward(self, x: Array) -> Array:
        y = local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        self._save_for_backward(x)
        return y

    def backward(self, grad_y: Array) -> Array:
        (x,) = self._saved()
        return local_response_norm_backward(
            grad_y, x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
