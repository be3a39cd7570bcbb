"""Fusion of the layers between convolutions, found by the containers.

The user writes the network as before; Sequential looks at its children
and runs these sequences through fused kernels:

    (ReLU6 fuses wherever ReLU does below, except after Linear and Residual)
    Conv2d -> BatchNorm2d -> ReLU   train: conv, then one batch_norm_relu
                                    pass; backward: one masked-sums pass
                                    and one input-gradient pass, in place
                                    eval: batch norm folded into the conv
                                    (cached weights), bias + ReLU in place
    Conv2d -> BatchNorm2d           eval: folded into the conv
    Conv2d -> ReLU                  conv without bias, then bias + ReLU in
                                    place; backward: mask + bias gradient
                                    in one pass
    Linear -> ReLU                  the ReLU in place on the fresh output,
                                    its backward in place when allowed
    BatchNorm2d -> ReLU             batch_norm_relu and its backward
    Residual -> ReLU                (and ResidualReLU, a ResNet block) the
                                    sum and the ReLU in one pass, with the
                                    body's last BatchNorm2d when training

A step falls back to running its modules one by one, exactly as without
fusion, whenever a precondition does not hold at that call: a module of a
subclass (LeakyReLU is not ReLU; a user's subclass may change forward),
a layer with data_format="channels_last" (the fused kernels are NCHW),
a forward/backward replaced on the instance (hooks do that, see
convcore.nn.hooks), an input dtype other than
the layer's, a BatchNorm whose channel count is not the conv's, or
summary() recording layers. Which path ran is kept with the forward's
cache, so backward always matches the forward that ran.

Nothing of the user's changes: parameters, buffers, state_dict keys, repr
and summary are the modules' own; a step only holds references to them.
Sequential builds its list of steps at the first forward and rebuilds it
when its children change. set_fusion(False), or CONVCORE_FUSION=0 in the
environment, turns every fused path off (the reference for tests).

Eval-mode folding: w' = w * s, b' = (b - running_mean) * s + beta with
s = gamma / sqrt(running_var + eps) (convcore.functional.fold_batch_norm)
are cached per step and recomputed when any of the arrays involved is
replaced or changed through convcore: the key is each Parameter's identity,
`.data` array and `version` (bumped by optimisers, load_state_dict and
assignment to .data) and the batch norm's buffer arrays and
`buffers_version` (bumped by every training-mode forward, load_state_dict
and reset_running_stats). A write into an array's elements by hand
(`conv.weight.data[...] = v`) is not seen: call `param.bump()` (or
`bn.bump_buffers()`) after one. The user's parameters are never modified.
The folded path also has a backward (eval-mode fine-tuning): the weight
gradient of the folded conv is scaled back by s, and gamma's gradient
comes from sum(g * conv(x, w)) = <grad_w, w>, the convolution's adjoint,
so the unfolded output is never formed.
"""
import os

import numpy as np

from convcore._runtime.grad_mode import is_grad_enabled
from convcore.functional import (batch_norm_relu, batch_norm_relu_backward,
                                 bias_relu_, bias_relu_backward, conv2d,
                                 conv2d_backward, fold_batch_norm, relu_,
                                 relu_backward, relu_backward_)
from convcore.nn import _reuse, _summary, hooks
from convcore.nn.activation import ReLU, ReLU6
from convcore.nn.conv import Conv2d
from convcore.nn.linear import Linear
from convcore.nn.normalization import BatchNorm2d
from convcore.utils.layout import CHANNELS_FIRST

_enabled = os.environ.get("CONVCORE_FUSION", "1").strip().lower() not in (
    "0", "false", "off", "no")


def set_fusion(enabled):
    """Turn the containers' fused paths on (default) or off; returns the
    previous setting. Off runs every layer on its own, as written (the
    environment variable CONVCORE_FUSION=0 sets the default to off)."""
    global _enabled
    previous = _enabled
    _enabled = bool(enabled)
    return previous


def fusion_enabled():
    return _enabled


def active():
    """Fused paths may run now: enabled, and summary() not recording."""
    return _enabled and _summary.active_recorder() is None


def plain(m, cls):
    """m is exactly a `cls` whose forward/backward are the class's own."""
    if type(m) is not cls:
        return False
    d = m.__dict__
    return "forward" not in d and "backward" not in d


def relu_cap(m):
    """max_value of a ReLU-like module the steps fuse: None for ReLU, 6.0
    for ReLU6; False for any other module."""
    t = type(m)
    return None if t is ReLU else 6.0 if t is ReLU6 else False


def channels_first(m):
    """m computes in NCHW (the fused kernels' only layout): a module with no
    data_format, or data_format channels_first."""
    return getattr(m, "data_format", CHANNELS_FIRST) == CHANNELS_FIRST


def _bn_ok(bn, x):
    """bn can run fused on x (4-D NCHW, its dtype and channel count)."""
    w = bn.weight
    return (x.ndim == 4 and channels_first(bn) and x.shape[1] == bn.num_features
            and (w is None or w.data.dtype == x.dtype)
            and (bn.running_mean is None or bn.running_mean.dtype == x.dtype))


def _conv_ok(conv, x):
    return isinstance(x, np.ndarray) and x.dtype == conv.weight.data.dtype and (
        conv.bias is None or conv.bias.data.dtype == x.dtype)


def _data(p):
    return None if p is None else p.data


def _accumulate(p, g):
    if p is not None and g is not None:
        p.accumulate_grad(np.asarray(g, dtype=p.data.dtype))


def _conv_forward(conv, x, bias, weight=None):
    """conv's convolution of x, with its own weights or `weight` (the
    folded ones: a new array whenever they change, so one version)."""
    w = conv.weight
    return conv2d(x, w.data if weight is None else weight, bias,
                  *conv._geometry(), algorithm=conv.algorithm,
                  weight_version=w.version if weight is None else 0)


def _conv_backward(conv, g, x, weight=None, weight_grad=None):
    """Input and weight gradients of conv (no bias: the fused steps sum it)."""
    w = conv.weight
    gx, gw, _ = conv2d_backward(
        g, x, w.data if weight is None else weight, *conv._geometry(),
        algorithm=conv.algorithm, bias=False, input_grad=conv._input_grad_needed(),
        weight_grad=w.requires_grad if weight_grad is None else weight_grad,
        weight_version=w.version if weight is None else 0)
    return gx, gw


class Step:
    """A run of modules that one fused forward/backward replaces. Subclasses
    define _fused_forward(x) -> y or None (preconditions failed: nothing
    done) and _fused_backward(cache, grad_y, owned) -> grad_x."""

    fused = True

    def __init__(self, *modules):
        self.modules = modules
        self._cache = None

    def __call__(self, x):
        y = None
        if active() and all(plain(m, type(m)) and channels_first(m) for m in self.modules):
            current = _reuse.before_fused(self.modules)   # one instance, one place
            y = self._fused_forward(x)
            if y is not None:
                _reuse.after_fused(self.modules, current)
        if y is None:
            for m in self.modules:
                x = m(x)
            self._cache = ("unfused",) if is_grad_enabled() else None
            return x
        return y

    def _keep(self, *values):
        self._cache = values if is_grad_enabled() else None

    def backward(self, grad_y, owned=False):
        """grad_x; `owned`: grad_y may be overwritten (nobody else holds it)."""
        cache = self._cache
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}: nothing saved for backward; "
                               "call forward first (outside convcore.no_grad())")
        self._cache = None
        if cache[0] == "unfused":
            for m in reversed(self.modules):
                if grad_y is None:
                    break
                grad_y = m.backward(grad_y)
            return grad_y
        for m in self.modules:   # a hook added since forward would be skipped
            hooks.unchanged_since_forward(m, type(self).__name__)
        return self._fused_backward(cache, grad_y, owned)


class _Folded:
    """The eval-mode batch norm folded into the conv before it: cached
    (w', b', s) recomputed when a key array or version changes."""

    def __init__(self):
        self._key = None
        self._value = None

    @staticmethod
    def _same(a, b):
        # Objects (kept alive by the key, so identity is meaningful) by
        # identity, numbers by value.
        return a is b or (type(a) in (int, float) and a == b)

    def get(self, conv, bn):
        key = []
        for p in (conv.weight, conv.bias, bn.weight, bn.bias):
            key += (None, None, -1) if p is None else (p, p.data, p.version)
        key += (bn.running_mean, bn.running_var, bn.buffers_version, bn.eps)
        old = self._key
        if old is None or not all(map(self._same, old, key)):
            w, b = fold_batch_norm(conv.weight.data, _data(conv.bias), bn.running_mean,
                                   bn.running_var, _data(bn.weight), _data(bn.bias),
                                   bn.eps)
            gamma = (np.ones(bn.num_features) if bn.weight is None
                     else bn.weight.data.astype(np.float64))
            invstd = 1.0 / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
            self._value = (w, b, gamma * invstd, invstd)
            self._key = key
        return self._value

    def clear(self):
        self._key = self._value = None


class ConvBN(Step):
    """Conv2d -> BatchNorm2d (-> ReLU with relu=True)."""

    def __init__(self, conv, bn, relu=None):
        super().__init__(*((conv, bn) if relu is None else (conv, bn, relu)))
        self.conv, self.bn, self.relu = conv, bn, relu
        self.cap = None if relu is None else relu_cap(relu)
        self.folded = _Folded()

    def _fused_forward(self, x):
        conv, bn = self.conv, self.bn
        if not (_conv_ok(conv, x) and x.ndim == 4 and conv.out_channels == bn.num_features
                and (bn.weight is None or bn.weight.data.dtype == x.dtype)
                and (bn.running_mean is None or bn.running_mean.dtype == x.dtype)):
            return None
        if bn.training or not bn.track_running_stats:
            if self.relu is None:
                return None  # nothing to fuse: conv, then the batch norm
            # The convolution as the layer itself runs it (its cache, its
            # bias); the batch norm and ReLU fused after it.
            z = conv(x)
            use_batch_stats, momentum = bn._step_mode()
            y, mean, invstd = batch_norm_relu(
                z, bn.running_mean, bn.running_var, _data(bn.weight), _data(bn.bias),
                training=use_batch_stats, momentum=momentum, eps=bn.eps,
                return_stats=True, max_value=self.cap)
            self._keep("train", z, y, mean, invstd, use_batch_stats)
            return y
        w, b, s, invstd = self.folded.get(conv, bn)
        if self.relu is None:
            y = _conv_forward(conv, x, b, w)
        else:
            y = bias_relu_(_conv_forward(conv, x, None, w), b, max_value=self.cap)
        # backward reads y only for the ReLU mask
        self._keep("eval", x, None if self.relu is None else y, w, b, s, invstd)
        return y

    def _fused_backward(self, cache, grad_y, owned):
        conv, bn = self.conv, self.bn
        if cache[0] == "train":
            _, z, y, mean, invstd, use_batch_stats = cache
            gz, gw, gb = batch_norm_relu_backward(
                grad_y, y, z, mean, invstd, _data(bn.weight), training=use_batch_stats,
                overwrite_grad_y=owned, max_value=self.cap)
            if bn.weight is not None:
                bn.weight.accumulate_grad(gw)
                bn.bias.accumulate_grad(gb)
            return conv.backward(gz)
        _, x, y, w, b, s, invstd = cache
        if self.relu is None:
            g = grad_y
            gsum = grad_y.sum(axis=(0, 2, 3), dtype=np.float64)
        else:
            g, gsum = bias_relu_backward(grad_y, y, overwrite_grad_y=owned,
                                         max_value=self.cap)
            gsum = gsum.astype(np.float64)
        need_gamma = bn.weight is not None and bn.weight.requires_grad
        need_w = conv.weight.requires_grad
        gx, graw = _conv_backward(conv, g, x, weight=w, weight_grad=need_w or need_gamma)
        k = (-1,) + (1,) * (w.ndim - 1)
        if need_w:
            conv.weight.accumulate_grad(graw * s.reshape(k), owned=True)
        if conv.bias is not None:
            _accumulate(conv.bias, gsum * s)
        if bn.weight is not None:
            if need_gamma:
                # sum(g * xhat) with xhat = (conv(x, w) + cb - mean) * invstd,
                # and sum(g * conv(x, w)) = <graw, w> per output channel.
                K = graw.shape[0]
                wg = np.einsum("kj,kj->k", conv.weight.data.reshape(K, -1).astype(np.float64),
                               graw.reshape(K, -1).astype(np.float64))
                cb = 0.0 if conv.bias is None else conv.bias.data.astype(np.float64)
                _accumulate(bn.weight, invstd * (wg + (cb - bn.running_mean) * gsum))
            _accumulate(bn.bias, gsum)
        return gx


class ConvReLU(Step):
    """Conv2d -> ReLU: conv without its bias, then bias + ReLU in place."""

    def __init__(self, conv, relu):
        super().__init__(conv, relu)
        self.conv = conv
        self.cap = relu_cap(relu)

    def _fused_forward(self, x):
        conv = self.conv
        if not _conv_ok(conv, x) or getattr(x, "ndim", 0) != 4:
            return None
        y = bias_relu_(_conv_forward(conv, x, None), _data(conv.bias), max_value=self.cap)
        self._keep("fused", x, y)
        return y

    def _fused_backward(self, cache, grad_y, owned):
        _, x, y = cache
        conv = self.conv
        want_b = conv.bias is not None and conv.bias.requires_grad
        g, gb = bias_relu_backward(grad_y, y, bias=want_b, overwrite_grad_y=owned,
                                   max_value=self.cap)
        if want_b:
            conv.bias.accumulate_grad(gb)
        gx, gw = _conv_backward(conv, g, x)
        conv.weight.accumulate_grad(gw, owned=True)
        return gx


class LinearReLU(Step):
    """Linear -> ReLU: the ReLU in place on the linear layer's new output."""

    def __init__(self, linear, relu):
        super().__init__(linear, relu)
        self.linear = linear

    def _fused_forward(self, x):
        lin = self.linear
        if not isinstance(x, np.ndarray) or x.dtype != lin.weight.data.dtype:
            return None
        y = lin(x)   # F.linear's new array, which nobody else holds
        if not (y.flags.c_contiguous and y.flags.writeable):
            y = y.copy()
        y = relu_(y)
        self._keep("fused", y)
        return y

    def _fused_backward(self, cache, grad_y, owned):
        y = cache[1]
        if (owned and isinstance(grad_y, np.ndarray) and grad_y.flags.c_contiguous
                and grad_y.flags.writeable and grad_y.dtype == y.dtype):
            g = relu_backward_(grad_y, y)
        else:
            g = relu_backward(grad_y, y)
        return self.linear.backward(g)


class BNReLU(Step):
    """BatchNorm2d -> ReLU (a batch norm not right after a conv: a
    pre-activation block, or DenseNet's)."""

    def __init__(self, bn, relu):
        super().__init__(bn, relu)
        self.bn = bn
        self.cap = relu_cap(relu)

    def _fused_forward(self, x):
        bn = self.bn
        if not isinstance(x, np.ndarray) or not _bn_ok(bn, x):
            return None
        use_batch_stats, momentum = bn._step_mode()
        y, mean, invstd = batch_norm_relu(
            x, bn.running_mean, bn.running_var, _data(bn.weight), _data(bn.bias),
            training=use_batch_stats, momentum=momentum, eps=bn.eps, return_stats=True,
            max_value=self.cap)
        self._keep("fused", x, y, mean, invstd, use_batch_stats)
        return y

    def _fused_backward(self, cache, grad_y, owned):
        _, x, y, mean, invstd, use_batch_stats = cache
        bn = self.bn
        gx, gw, gb = batch_norm_relu_backward(
            grad_y, y, x, mean, invstd, _data(bn.weight), training=use_batch_stats,
            overwrite_grad_y=owned, max_value=self.cap)
        if bn.weight is not None:
            bn.weight.accumulate_grad(gw)
            bn.bias.accumulate_grad(gb)
        return gx


class ResidualThenReLU(Step):
    """Residual -> ReLU inside a Sequential: the Residual's own fused
    sum-and-ReLU (Residual.forward_relu)."""

    def __init__(self, res, relu):
        super().__init__(res, relu)
        self.res, self.relu = res, relu

    def __call__(self, x):
        if not (plain(self.relu, ReLU) and "forward" not in self.res.__dict__
                and "backward" not in self.res.__dict__):
            return super().__call__(x)   # runs the two modules one by one
        current = _reuse.before_fused(self.modules)
        y = self.res.forward_relu(x, self.relu)
        _reuse.after_fused(self.modules, current)
        self._cache = ("fused",) if is_grad_enabled() else None
        return y

    def _fused_backward(self, cache, grad_y, owned):
        return self.res.backward_relu(grad_y, self.relu)


# Modules whose backward returns a new array that nobody else holds: a
# container may let the next step overwrite it (in-place ReLU masking).
FRESH_GRAD = (Conv2d, BatchNorm2d, Linear)


def build_plan(modules, residual_cls):
    """Steps for a Sequential's children: fused Steps where a pattern
    matches (by exact type; preconditions are checked again at each call),
    the modules themselves elsewhere. None when nothing fuses."""
    steps, i, n, any_fused = [], 0, len(modules), False
    while i < n:
        m = modules[i]
        a = modules[i + 1] if i + 1 < n else None
        b = modules[i + 2] if i + 2 < n else None
        step, used = None, 1
        if type(m) is Conv2d and type(a) is BatchNorm2d:
            if relu_cap(b) is not False:
                step, used = ConvBN(m, a, b), 3
            else:
                step, used = ConvBN(m, a), 2
        elif type(m) is Conv2d and relu_cap(a) is not False:
            step, used = ConvReLU(m, a), 2
        elif type(m) is Linear and type(a) is ReLU:
            step, used = LinearReLU(m, a), 2
        elif type(m) is BatchNorm2d and relu_cap(a) is not False:
            step, used = BNReLU(m, a), 2
        elif type(m) is residual_cls and type(a) is ReLU:
            step, used = ResidualThenReLU(m, a), 2
        if step is None:
            steps.append(m)
        else:
            steps.append(step)
            any_fused = True
        i += used
    return steps if any_fused else None
