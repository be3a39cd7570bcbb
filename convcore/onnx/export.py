"""convcore model -> ONNX graph.

The model is walked as it is built (containers recursively, layers one
node or a few each) while a sample input of `input_shape` is run through
it, so every layer knows its input's shape (Flatten, Linear on N-D
inputs, adaptive pooling need it). Weights become initializers named by
the model's state_dict keys; the batch dimension is symbolic ("batch").
The eval-mode network is written: Dropout is the identity, BatchNorm
uses its running statistics. The containers' fused paths
(convcore.nn._fusion) run the same layers, so exporting the layers one
by one is exact; onnxruntime fuses them again on its side.
"""
import os
from typing import Any, Optional, Sequence

import numpy as np
from numpy.typing import DTypeLike

from convcore._runtime.grad_mode import no_grad
from convcore.models._common import ResidualReLU
from convcore.models.googlenet import TransformInput
from convcore.models.mobilenet import InvertedResidual
from convcore.models.resnet import PadShortcut
from convcore.nn import (GELU, AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm1d,
                         BatchNorm2d, Concat, Conv2d, ConvTranspose2d, Dropout, Dropout2d,
                         Flatten, GroupNorm, Identity, LayerNorm, LeakyReLU, Linear,
                         LocalResponseNorm, LogSoftmax, MaxPool2d, Module, ReLU, ReLU6, Residual,
                         Sequential, Sigmoid, SiLU, Softmax, Softplus, SyncBatchNorm, Tanh,
                         Upsample)
from convcore.utils.layout import CHANNELS_LAST
from convcore.utils.types import PathLike
from convcore.onnx._require import require_onnx
from convcore.onnx.graph import (Add, Cat, Erf, Graph, Mul, Reshape, Scale, Shift,
                                 Transpose)

DEFAULT_OPSET = 17   # LayerNormalization needs 17; onnxruntime runs 7..21
MIN_OPSET = 13       # Clip bounds and Slice steps as inputs, axes of Squeeze...
_DTYPES = {np.dtype(np.float32): "FLOAT", np.dtype(np.float64): "DOUBLE"}


class _Graph:
    """Nodes and initializers of the graph being written, with unique names."""

    def __init__(self, onnx, dtype, opset):
        self.onnx, self.dtype, self.opset = onnx, dtype, opset
        self.nodes, self.initializers, self._names = [], [], set()

    def name(self, base):
        base = base or "t"
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def constant(self, name, array, dtype=None):
        """An initializer holding `array` (in the model's dtype unless
        `dtype`, e.g. int64 for shapes); returns its name."""
        name = self.name(name)
        array = np.asarray(array, dtype=self.dtype if dtype is None else dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, path, **attrs):
        """Append one node; returns its output's name."""
        out = self.name(f"{path or 'model'}/{op}")
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out], name=out,
                                                     **attrs))
        return out


def _key(path, name):
    return f"{path}.{name}" if path else name


def _param(g, path, name, p):
    return g.constant(_key(path, name), p.data)


def _pads(padding):
    """ONNX pads (top, left, bottom, right) from a symmetric (h, w) padding."""
    return [padding[0], padding[1], padding[0], padding[1]]


def _weight_and_bias(g, m, path):
    """The initializers of a layer's weight and (if it has one) bias."""
    return [_param(g, path, "weight", m.weight)] + (
        [] if m.bias is None else [_param(g, path, "bias", m.bias)])


def _conv(g, m, x, y, path):
    if isinstance(m.padding, str):
        if m.padding == "valid":
            pads = [0, 0, 0, 0]
        else:   # "same" (stride 1): torch puts the odd pixel at the end
            total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
            pads = [total[0] // 2, total[1] // 2, total[0] - total[0] // 2,
                    total[1] - total[1] // 2]
    else:
        pads = _pads(m.padding)
    return g.node("Conv", [x] + _weight_and_bias(g, m, path), path,
                  kernel_shape=list(m.kernel_size), strides=list(m.stride), pads=pads,
                  dilations=list(m.dilation), group=m.groups)


def _linear(g, m, x, y, path, x_ndim):
    if x_ndim == 2:
        return g.node("Gemm", [x] + _weight_and_bias(g, m, path), path, transB=1)
    # Gemm is 2-D only: x @ W^T (+ b) broadcast over the leading dimensions
    w = _param(g, path, "weight", m.weight)
    wt = g.node("Transpose", [w], path, perm=[1, 0])
    out = g.node("MatMul", [x, wt], path)
    if m.bias is not None:
        out = g.node("Add", [out, _param(g, path, "bias", m.bias)], path)
    return out


def _batch_norm(g, m, x, y, path):
    if m.running_mean is None:
        raise _unsupported(m, path, "track_running_stats=False has no running statistics "
                                    "for the eval-mode graph")
    n = m.num_features
    scale = (_param(g, path, "weight", m.weight) if m.weight is not None
             else g.constant(_key(path, "weight"), np.ones(n)))
    shift = (_param(g, path, "bias", m.bias) if m.bias is not None
             else g.constant(_key(path, "bias"), np.zeros(n)))
    mean = g.constant(_key(path, "running_mean"), m.running_mean)
    var = g.constant(_key(path, "running_var"), m.running_var)
    return g.node("BatchNormalization", [x, scale, shift, mean, var], path, epsilon=m.eps,
                  momentum=1.0 - (m.momentum if m.momentum is not None else 0.1))


def _layer_norm(g, x, path, axis, eps, n, weight=None, bias=None):
    if g.opset < 17:
        raise ValueError(f"convcore.onnx.export: layer at '{path}' needs "
                         f"LayerNormalization, opset >= 17; got opset={g.opset}")
    scale = g.constant(_key(path, "weight"), weight.data if weight is not None else np.ones(n))
    shift = g.constant(_key(path, "bias"), bias.data if bias is not None else np.zeros(n))
    return g.node("LayerNormalization", [x, scale, shift], path, axis=axis, epsilon=eps)


def _group_norm(g, m, x, y, path, x_shape):
    # normalise (N, G, C/G * H * W) over its last axis, then the per-channel affine
    grouped = g.node("Reshape", [x, g.constant(f"{path}/groups", [0, m.num_groups, -1],
                                               np.int64)], path)
    normed = _layer_norm(g, grouped, f"{path}/norm", -1, m.eps,
                         int(np.prod(x_shape[1:])) // m.num_groups)
    out = g.node("Reshape", [normed, g.node("Shape", [x], path)], path)
    if m.weight is None:
        return out
    trailing = (m.num_channels,) + (1,) * (len(x_shape) - 2)
    out = g.node("Mul", [out, g.constant(_key(path, "weight"),
                                         m.weight.data.reshape(trailing))], path)
    return g.node("Add", [out, g.constant(_key(path, "bias"), m.bias.data.reshape(trailing))],
                  path)


def _max_pool(g, m, x, y, path):
    return g.node("MaxPool", [x], path, kernel_shape=list(m.kernel_size),
                  strides=list(m.stride), pads=_pads(m.padding), dilations=list(m.dilation),
                  ceil_mode=int(m.ceil_mode))


def _avg_pool(g, m, x, y, path):
    return g.node("AveragePool", [x], path, kernel_shape=list(m.kernel_size),
                  strides=list(m.stride), pads=_pads(m.padding), ceil_mode=int(m.ceil_mode),
                  count_include_pad=int(m.count_include_pad))


def _adaptive_matrix(n_in, n_out):
    """(n_out, n_in) averaging matrix of adaptive pooling along one axis:
    row i averages x[floor(i*n_in/n_out) : ceil((i+1)*n_in/n_out)]."""
    a = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def _adaptive_windows(g, x, y, path, x_shape, global_op, pool_op):
    """Adaptive pooling written as a fixed pooling where one fits: the
    global one, none (same size), or equal windows (kernel = stride);
    None when the windows vary in size."""
    (h, w), (oh, ow) = x_shape[2:], y.shape[2:]
    if (oh, ow) == (1, 1):
        return g.node(global_op, [x], path)
    if (h, w) == (oh, ow):
        return x
    if h % oh == 0 and w % ow == 0:
        k = [h // oh, w // ow]
        return g.node(pool_op, [x], path, kernel_shape=k, strides=k)
    return None


def _adaptive_avg_pool(g, m, x, y, path, x_shape):
    out = _adaptive_windows(g, x, y, path, x_shape, "GlobalAveragePool", "AveragePool")
    if out is not None:
        return out
    # Windows of varying size (or overlapping, when upsampling): a linear
    # map per axis, A_h @ x @ A_w^T, exact and still dynamic in the batch.
    (h, w), (oh, ow) = x_shape[2:], y.shape[2:]
    out = g.node("MatMul", [x, g.constant(f"{path}/cols", _adaptive_matrix(w, ow).T)], path)
    return g.node("MatMul", [g.constant(f"{path}/rows", _adaptive_matrix(h, oh)), out], path)


def _flatten(g, m, x, y, path, x_shape):
    nd = len(x_shape)
    s, e = m.start_dim % nd, m.end_dim % nd
    if e == nd - 1:
        if s == 0:   # everything, batch included, into one axis
            return g.node("Reshape", [x, g.constant(f"{path}/shape", [-1], np.int64)], path)
        return g.node("Flatten", [x], path, axis=s)
    # 0 copies a dimension (the batch stays symbolic), -1 takes the rest
    shape = [0] * s + [-1] + list(x_shape[e + 1:])
    return g.node("Reshape", [x, g.constant(f"{path}/shape", shape, np.int64)], path)


def _lrn(g, m, x, y, path):
    if m.size % 2 == 0:
        # torch pads an even window size//2 before, ONNX (size-1)//2
        raise _unsupported(m, path, f"an even size ({m.size}) centres the window "
                                    "differently in ONNX's LRN")
    return g.node("LRN", [x], path, size=m.size, alpha=m.alpha, beta=m.beta, bias=m.k)


def _softplus(g, m, x, y, path):
    # torch's threshold (linear above it) differs from log1p(exp) by less
    # than exp(-threshold): below float rounding at the default 20
    if m.beta == 1.0:
        return g.node("Softplus", [x], path)
    beta = g.constant(f"{path}/beta", m.beta)
    sp = g.node("Softplus", [g.node("Mul", [x, beta], path)], path)
    return g.node("Div", [sp, beta], path)


def _relu6(g, m, x, y, path):
    return g.node("Clip", [x, g.constant(f"{path}/min", 0.0), g.constant(f"{path}/max", 6.0)],
                  path)


def _pad_shortcut(g, m, x, y, path):
    s, lo = m.stride, (m.out_channels - m.in_channels) // 2
    big = np.iinfo(np.int64).max
    sub = g.node("Slice", [x, g.constant(f"{path}/starts", [0, 0], np.int64),
                           g.constant(f"{path}/ends", [big, big], np.int64),
                           g.constant(f"{path}/axes", [2, 3], np.int64),
                           g.constant(f"{path}/steps", [s, s], np.int64)], path)
    return g.node("Pad", [sub, g.constant(f"{path}/pads", [0, lo, 0, 0, 0, lo, 0, 0],
                                          np.int64)], path)


def _conv_transpose(g, m, x, y, path):
    return g.node("ConvTranspose", [x] + _weight_and_bias(g, m, path), path,
                  kernel_shape=list(m.kernel_size), strides=list(m.stride),
                  pads=_pads(m.padding), dilations=list(m.dilation),
                  output_padding=list(m.output_padding), group=m.groups)


# torch's source coordinates (convcore.functional.interpolate) as ONNX
# Resize's: mode -> (mode, coordinate_transformation_mode, nearest_mode)
_RESIZE = {
    "nearest": ("nearest", "asymmetric", "floor"),            # floor(o / scale)
    # floor((o + 0.5) / scale): round half up of (o + 0.5) / scale - 0.5
    "nearest-exact": ("nearest", "half_pixel", "round_prefer_ceil"),
    ("bilinear", True): ("linear", "align_corners", "floor"),
    # not pytorch_half_pixel: torch reads (0.5 * in/out - 0.5) for an
    # output of one pixel too, not 0; below 0 both clamp to the edge
    ("bilinear", False): ("linear", "half_pixel", "floor"),
}


def _resize(g, m, x, y, path):
    key = (m.mode, bool(m.align_corners)) if m.mode == "bilinear" else m.mode
    mode, transform, nearest = _RESIZE[key]
    attrs = {"mode": mode, "coordinate_transformation_mode": transform,
             "nearest_mode": nearest}
    if m.scale_factor is not None and not m.recompute_scale_factor:
        # the coordinates divide by the scale itself, as torch's do
        sh, sw = m.scale_factor if isinstance(m.scale_factor, tuple) else (m.scale_factor,) * 2
        scales = g.constant(f"{path}/scales", [1.0, 1.0, sh, sw], np.float32)
        return g.node("Resize", [x, "", scales], path, **attrs)
    # a size: the coordinates use in/out, as torch's do
    if g.opset >= 18:
        sizes = g.constant(f"{path}/sizes", y.shape[2:], np.int64)
        return g.node("Resize", [x, "", "", sizes], path, axes=[2, 3], **attrs)
    # before opset 18 the sizes name every axis: the batch's is read from x
    lead = g.node("Slice", [g.node("Shape", [x], path),
                            g.constant(f"{path}/zero", [0], np.int64),
                            g.constant(f"{path}/two", [2], np.int64)], path)
    sizes = g.node("Concat", [lead, g.constant(f"{path}/sizes", y.shape[2:], np.int64)],
                   path, axis=0)
    return g.node("Resize", [x, "", "", sizes], path, **attrs)


def _gelu(g, m, x, y, path):
    if g.opset >= 20:
        return g.node("Gelu", [x], path, approximate=m.approximate)
    # the decompositions opset 20's Gelu defines (and torch writes)
    if m.approximate == "tanh":
        # x + 0.044715 x^3 as x (1 + 0.044715 x^2)
        cube = g.node("Mul", [x, g.node("Mul", [x, x], path)], path)
        inner = g.node("Add", [x, g.node("Mul", [cube, g.constant(f"{path}/c", 0.044715)],
                                         path)], path)
        phi = g.node("Tanh", [g.node("Mul", [inner, g.constant(
            f"{path}/sqrt_2_over_pi", np.sqrt(2.0 / np.pi))], path)], path)
    else:
        phi = g.node("Erf", [g.node("Div", [x, g.constant(f"{path}/sqrt2", np.sqrt(2.0))],
                                    path)], path)
    one_plus = g.node("Add", [phi, g.constant(f"{path}/one", 1.0)], path)
    return g.node("Mul", [g.node("Mul", [x, one_plus], path),
                          g.constant(f"{path}/half", 0.5)], path)


def _silu(g, m, x, y, path):
    return g.node("Mul", [x, g.node("Sigmoid", [x], path)], path)


def _softmax(g, m, x, y, path):
    # the dimension torch resolves (dim=None: its legacy rule) on this rank
    op = "LogSoftmax" if type(m) is LogSoftmax else "Softmax"
    return g.node(op, [x], path, axis=m._dim(y.ndim) % y.ndim)


def _adaptive_max_pool(g, m, x, y, path, x_shape):
    if m.return_indices:
        raise _unsupported(m, path, "return_indices=True has no ONNX output")
    out = _adaptive_windows(g, x, y, path, x_shape, "GlobalMaxPool", "MaxPool")
    if out is None:
        raise _unsupported(m, path, f"output size {tuple(y.shape[2:])} does not divide the "
                                    f"input's {tuple(x_shape[2:])}: its windows vary in "
                                    "size, which MaxPool cannot write")
    return out


def _transform_input(g, m, x, y, path):
    k = (1, 3, 1, 1)
    out = g.node("Mul", [x, g.constant(f"{path}/scale", m.scale.reshape(k))], path)
    return g.node("Add", [out, g.constant(f"{path}/shift", m.shift.reshape(k))], path)


# Layers written from (graph, module, input name, sample output, path);
# those that need the input's shape take it as a last argument.
_LAYERS = {
    Conv2d: _conv, BatchNorm1d: _batch_norm, BatchNorm2d: _batch_norm,
    SyncBatchNorm: _batch_norm, MaxPool2d: _max_pool, AvgPool2d: _avg_pool,
    LocalResponseNorm: _lrn, Softplus: _softplus, ReLU6: _relu6, PadShortcut: _pad_shortcut,
    ConvTranspose2d: _conv_transpose, Upsample: _resize, GELU: _gelu, SiLU: _silu,
    Softmax: _softmax, LogSoftmax: _softmax, TransformInput: _transform_input,
    ReLU: lambda g, m, x, y, path: g.node("Relu", [x], path),
    Sigmoid: lambda g, m, x, y, path: g.node("Sigmoid", [x], path),
    Tanh: lambda g, m, x, y, path: g.node("Tanh", [x], path),
    LeakyReLU: lambda g, m, x, y, path: g.node("LeakyRelu", [x], path,
                                               alpha=m.negative_slope),
    Dropout: lambda g, m, x, y, path: x,
    Dropout2d: lambda g, m, x, y, path: x,
    # the Graph's own layers, written back as the operators they came from
    Scale: lambda g, m, x, y, path: g.node("Mul", [x, g.constant(f"{path}/value", m.value)],
                                           path),
    Shift: lambda g, m, x, y, path: g.node("Add", [x, g.constant(f"{path}/value", m.value)],
                                           path),
    Erf: lambda g, m, x, y, path: g.node("Erf", [x], path),
    Transpose: lambda g, m, x, y, path: g.node("Transpose", [x], path, perm=list(m.perm)),
    Identity: lambda g, m, x, y, path: x,
}
_SHAPED = {
    Linear: lambda g, m, x, y, path, shape: _linear(g, m, x, y, path, len(shape)),
    Flatten: _flatten, AdaptiveAvgPool2d: _adaptive_avg_pool, GroupNorm: _group_norm,
    AdaptiveMaxPool2d: _adaptive_max_pool,
    LayerNorm: lambda g, m, x, y, path, shape: _layer_norm(
        g, x, path, -len(m.normalized_shape), m.eps, m.normalized_shape, m.weight, m.bias),
}
_CONTAINERS = (Sequential, Residual, InvertedResidual, ResidualReLU, Concat, Graph)


def _unsupported(m, path, why=None):
    supported = sorted(c.__name__ for c in (*_LAYERS, *_SHAPED, *_CONTAINERS))
    where = f"'{path}'" if path else "the top level"
    reason = f": {why}" if why else (
        f"; supported layers: {', '.join(supported)}")
    return ValueError(f"convcore.onnx.export: cannot export {type(m).__name__} at {where} "
                      f"of the model{reason}")


def _walk(g, m, x, sample, path):
    """Write module m applied to tensor x (whose value on the sample input
    is `sample`); returns (output name, sample output)."""
    t = type(m)
    if t is Sequential:
        for name, child in m.named_children():
            x, sample = _walk(g, child, x, sample, _key(path, name))
        return x, sample
    if t in (Residual, InvertedResidual, ResidualReLU):
        body_name = "conv" if t is InvertedResidual else "body"
        yb, sb = _walk(g, m.body, x, sample, _key(path, body_name))
        ys, ss = (x, sample) if m.shortcut is None else \
            _walk(g, m.shortcut, x, sample, _key(path, "shortcut"))
        y, s = g.node("Add", [yb, ys], path), sb + ss
        if t is ResidualReLU:
            y, s = g.node("Relu", [y], _key(path, "relu")), np.maximum(s, 0)
        return y, s
    if t is Concat:
        outs = [_walk(g, child, x, sample, _key(path, name))
                for name, child in m.named_children()]
        return (g.node("Concat", [o for o, _ in outs], path, axis=m.axis),
                np.concatenate([s for _, s in outs], axis=m.axis))
    if t is Graph:
        return _walk_graph(g, m, x, sample, path)
    if t not in _LAYERS and t not in _SHAPED:
        raise _unsupported(m, path)
    y = m(sample)
    if getattr(m, "data_format", None) == CHANNELS_LAST and sample.ndim >= 3:
        return _channels_last(g, m, x, sample, y, path), y
    return _write(g, m, x, sample.shape, y, path), y


def _write(g, m, x, x_shape, y, path):
    t = type(m)
    if t in _LAYERS:
        return _LAYERS[t](g, m, x, y, path)
    return _SHAPED[t](g, m, x, y, path, x_shape)


def _channels_last(g, m, x, sample, y, path):
    """A channels-last layer written as its channels-first twin between
    Transposes (NHWC -> NCHW -> NHWC); onnxruntime cancels the pairs that
    meet between consecutive channels-last layers."""
    nd = sample.ndim
    to_first = [0, nd - 1] + list(range(1, nd - 1))
    x = g.node("Transpose", [x], path, perm=to_first)
    if type(m) is Flatten:   # flattens in channels-first order: nothing to move back
        return _write(g, m, x, sample.transpose(to_first).shape, y, path)
    out = _write(g, m, x, sample.transpose(to_first).shape, y.transpose(to_first), path)
    return g.node("Transpose", [out], path, perm=[0] + list(range(2, nd)) + [1])


def _walk_graph(g, graph, x, sample, path):
    """A loaded (and perhaps fine-tuned) model written back: its nodes in
    order, the multi-input ones as the ONNX operators they came from."""
    names, samples = {graph.input_name: x}, {graph.input_name: sample}
    for node in graph.nodes:
        m, where = node.module, _key(path, node.name)
        ins = [names[t] for t in node.inputs]
        args = [samples[t] for t in node.inputs]
        if type(m) is Add:
            out, s = g.node("Add", ins, where), args[0] + args[1]
        elif type(m) is Mul:
            out, s = g.node("Mul", ins, where), args[0] * args[1]
        elif type(m) is Cat:
            out = g.node("Concat", ins, where, axis=m.axis)
            s = np.concatenate(args, axis=m.axis)
        elif type(m) is Reshape:
            s = m(args[0])
            out = g.node("Reshape", [ins[0], g.constant(f"{where}/shape", m.shape, np.int64)],
                         where)
        else:
            out, s = _walk(g, m, ins[0], args[0], where)
        names[node.output], samples[node.output] = out, s
    return names[graph.output_name], samples[graph.output_name]


def _check_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in _DTYPES:
        raise TypeError(f"convcore.onnx.export: dtype must be float32 or float64, got {dt}")
    return dt


def export(model: Module, input_shape: Sequence[int], path: Optional[PathLike] = None, *,
           opset: Optional[int] = None, dtype: DTypeLike = np.float32,
           input_name: str = "input", output_name: str = "output") -> Any:
    """Write `model` (a convcore nn.Module) as an ONNX model.

    Parameters
    ----------
    model : Module built from the supported layers (every convcore.models
        network; Conv2d, ConvTranspose2d, Linear, BatchNorm, activations
        (GELU, SiLU, Softmax, LogSoftmax among them), pooling, Upsample,
        LRN, Dropout, Dropout2d, Flatten, Identity, GroupNorm, LayerNorm,
        Sequential, Residual, Concat, and the Graph that load() builds;
        channels-last layers between Transposes). The eval-mode
        network is written; the model's train/eval flags are left as they
        were.
    input_shape : shape of one input, batch included, e.g. (1, 3, 224, 224);
        the batch dimension becomes symbolic ("batch") in the graph.
    path : file to write (str or os.PathLike), or None to only return it.
    opset : ONNX opset version (default 17; at least 13). GELU is the
        Gelu operator from 20, its formula below; Upsample to a size
        has constant sizes from 18, below them sizes read from the input.
    dtype : float32 (default) or float64, for the input, output and weights.

    Returns the onnx.ModelProto, checked with onnx.checker.check_model.
    A layer that cannot be written raises ValueError naming its type and
    its path in the model (state_dict-style, e.g. 'features.3').
    """
    onnx = require_onnx()
    if not isinstance(model, Module):
        raise TypeError(f"convcore.onnx.export: model must be a convcore nn.Module, got "
                        f"{type(model).__name__}")
    dt = _check_dtype(dtype)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise ValueError(f"convcore.onnx.export: opset must be >= {MIN_OPSET}, got {opset}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) < 2 or min(input_shape) < 1:
        raise ValueError("convcore.onnx.export: input_shape must have a batch and at least "
                         f"one more positive dimension, got {input_shape}")
    g = _Graph(onnx, dt, opset)
    g.name(input_name)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        # a random sample, not zeros: no layer sees a degenerate input; in
        # the model's own precision (the graph's may differ: `dtype`)
        params = model.parameters()
        sample = np.random.default_rng(0).standard_normal(input_shape).astype(
            params[0].data.dtype if params else dt)
        with no_grad():
            out, sample_out = _walk(g, model, input_name, sample, "")
    finally:
        for m, training in modes:
            m.training = training
    if not g.nodes or g.nodes[-1].output[0] != out:
        # an identity model, or one ending in a layer that wrote no node
        out = g.node("Identity", [out], "")
    # the last node's output takes the public name
    g.nodes[-1].output[0] = output_name
    elem = getattr(onnx.TensorProto, _DTYPES[dt])
    helper = onnx.helper
    graph = helper.make_graph(
        g.nodes, type(model).__name__,
        [helper.make_tensor_value_info(input_name, elem, ("batch",) + input_shape[1:])],
        [helper.make_tensor_value_info(output_name, elem,
                                       ("batch",) + tuple(sample_out.shape[1:]))],
        initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="convcore")
    # the oldest IR version that carries this opset: runtimes refuse a
    # model whose IR version is newer than they know
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto

