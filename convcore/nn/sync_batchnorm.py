"""SyncBatchNorm: batch norm over the global batch of data-parallel training.

With DistributedDataParallel each rank sees only its share of the batch,
so a plain BatchNorm normalises with local statistics (PyTorch DDP's
default, and convcore's: BatchNorm2d stays local). SyncBatchNorm reduces
the statistics over all ranks instead, forward and backward, so N ranks
with b images each normalise exactly as one process with N*b images:

    forward   mean = sum(x) / M over all ranks (M values per channel in
              all), var = sum((x - mean)^2) / M, both reduced in float64
              (two all-reduces: the second pass keeps the variance exact)
    backward  grad_x = w * invstd * (gy - sum(gy) / M - xhat * sum(gy * xhat) / M)
              with both sums reduced over the ranks; the weight and bias
              gradients stay local sums, which DDP then averages

Running statistics use the global mean and the unbiased global variance,
so they are the same on every rank. Eval mode, and world size 1, run the
plain batch norm.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from convcore._runtime import mpi as _mpi
from convcore.functional import batch_norm, batch_norm_backward
from convcore.nn import hooks
from convcore.nn.module import Module
from convcore.nn.normalization import _accumulate, _BatchNorm, _data
from convcore.utils.layout import CHANNELS_FIRST
from convcore.utils.types import Array


class SyncBatchNorm(_BatchNorm):
    """Batch norm with statistics over all ranks; inputs (N, C, ...) of 2 to
    5 dimensions, as torch.nn.SyncBatchNorm. Same arguments, parameters,
    buffers and state_dict keys as BatchNorm2d."""
    _ndims = (2, 3, 4, 5)

    def forward(self, x: Array) -> Array:
        self._check_input(x)
        if self.data_format != CHANNELS_FIRST:
            # The synced statistics reduce over dim 1; a channels-last
            # variant is not written yet.
            raise ValueError(f"SyncBatchNorm: data_format={self.data_format!r} is not "
                             "supported; use channels_first (NCHW) inputs")
        shape = x.shape
        if x.ndim == 5:  # (N, C, D, H, W): the kernels take up to 4-D
            x = x.reshape(shape[0], shape[1], -1)
        synced = self.training and _mpi.active()
        # Either path saves its own tuple for backward (x first); wrap it
        # with what backward needs to pick the path and restore the shape.
        y = self._synced_forward(x) if synced else super().forward(x)
        if self._cache is not None:
            self.__dict__["_cache"] = (shape, synced, self._cache)
        return y.reshape(shape)

    def backward(self, grad_y: Array) -> Array:
        shape, synced, saved = self._saved()
        self.__dict__["_cache"] = saved
        grad_y = grad_y.reshape(saved[0].shape)
        grad_x = self._synced_backward(grad_y) if synced else super().backward(grad_y)
        return grad_x.reshape(shape)

    def _synced_forward(self, x):
        dt = x.dtype
        C = x.shape[1]
        xs = x.reshape(x.shape[0], C, -1)
        stats = np.empty(C + 1)   # per-channel sums and the count, one message
        stats[:C] = xs.sum(axis=(0, 2), dtype=np.float64)
        stats[C] = xs.shape[0] * xs.shape[2]
        _mpi.all_reduce(stats, "sum")
        count = stats[C]
        if count < 2:
            raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel "
                             f"over all ranks when training, got {int(count)} (input of "
                             f"shape {x.shape} on this rank)")
        mean = stats[:C] / count
        centred = np.empty(C)
        centred[:] = ((xs - mean[None, :, None].astype(dt)) ** 2).sum(axis=(0, 2),
                                                                       dtype=np.float64)
        var = _mpi.all_reduce(centred, "sum") / count
        _, momentum = self._step_mode()
        y, mean_d, invstd = batch_norm(x, mean.astype(dt), var.astype(dt), _data(self.weight),
                                       _data(self.bias), training=False, eps=self.eps,
                                       return_stats=True)
        if self.track_running_stats:
            self.running_mean[...] = (1 - momentum) * self.running_mean + momentum * mean
            self.running_var[...] = ((1 - momentum) * self.running_var
                                     + momentum * var * (count / (count - 1)))
        self._save_for_backward(x, mean_d, invstd, count)
        return y

    def _synced_backward(self, grad_y):
        x, mean, invstd, count = self._saved()
        C = x.shape[1]
        weight = _data(self.weight)
        w = np.ones(C, dtype=x.dtype) if weight is None else weight
        # Local part: gy * w * invstd, and the local sums sum(gy * xhat), sum(gy).
        gx, g_xhat, g_sum = batch_norm_backward(grad_y, x, mean, invstd, w, training=False)
        sums = np.concatenate([g_sum, g_xhat]).astype(np.float64)
        _mpi.all_reduce(sums, "sum")
        mean_gy, mean_gy_xhat = sums[:C] / count, sums[C:] / count
        shape = (1, C) + (1,) * (x.ndim - 2)
        scale = (w * invstd).astype(np.float64)
        xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
        gx -= ((scale * mean_gy).reshape(shape).astype(x.dtype)
               + xhat * (scale * mean_gy_xhat).reshape(shape).astype(x.dtype))
        _accumulate(self, g_xhat if weight is not None else None, g_sum)
        return gx

    @classmethod
    def convert_sync_batchnorm(cls, module: Module) -> Module:
        """Replace every BatchNorm1d/2d in `module` (and `module` itself if
        it is one) by a SyncBatchNorm holding the same parameters and
        buffers (shared, not copied); returns the converted module, as
        torch.nn.SyncBatchNorm.convert_sync_batchnorm."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            return _converted(cls, module)
        if not isinstance(module, Module):
            raise TypeError(f"convert_sync_batchnorm: expected a convcore Module, got "
                            f"{type(module).__name__}")
        for m in list(module.modules()):
            for name, child in list(m._modules.items()):
                if isinstance(child, _BatchNorm) and not isinstance(child, SyncBatchNorm):
                    m._modules[name] = _converted(cls, child)
        return module


def convert_sync_batchnorm(module: Module) -> Module:
    """SyncBatchNorm.convert_sync_batchnorm(module)."""
    return SyncBatchNorm.convert_sync_batchnorm(module)


def _converted(cls, bn):
    sync = cls.__new__(cls)
    Module.__init__(sync)
    for key, value in bn.__dict__.items():
        if key not in ("_parameters", "_buffers", "_modules", "_cache") \
                and key not in hooks.INSTANCE_KEYS:
            sync.__dict__[key] = value
    sync._parameters.update(bn._parameters)
    sync._buffers.update(bn._buffers)
    return sync
