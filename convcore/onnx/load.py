"""ONNX graph -> convcore model (a Graph of convcore layers, trainable).

Each ONNX node becomes one convcore layer with the node's weights as its
Parameters (Conv -> Conv2d, Gemm or MatMul (+ Add of a bias) -> Linear,
BatchNormalization -> BatchNorm1d/2d, Resize -> Upsample, ...); Identity
vanishes; Add and Mul of two tensors, Concat, Transpose, and arithmetic
with a constant become Graph's Add, Mul, Cat, Transpose, Shift and Scale. A layer is
named after its weight's initializer when that is a PyTorch-style key
("layer1.0.conv1.weight" -> "layer1.0.conv1"), so the state_dict keys
are the exporting model's.
"""
import os
import re
from typing import Any, Dict, List, Optional, Union

import numpy as np
from numpy.typing import DTypeLike

from convcore import init
from convcore.nn import (GELU, AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm1d,
                         BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Flatten, LayerNorm,
                         LeakyReLU, Linear, LocalResponseNorm, LogSoftmax, MaxPool2d, ReLU,
                         ReLU6, Sigmoid, Softmax, Softplus, Tanh, Upsample)
from convcore.onnx._require import require_onnx
from convcore.utils.types import PathLike
from convcore.onnx.graph import (Add, Cat, Erf, Graph, Mul, Node, Reshape, Scale, Shift,
                                 Transpose)

_TORCH_KEY = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


class _Context:
    """What the converters need: constants, tensor ranks, the dtype, and
    the names of the layers made so far."""

    def __init__(self, constants, ranks, dtype, opset):
        self.constants, self.ranks, self.dtype, self.opset = constants, ranks, dtype, opset
        self.leaves = set()     # dotted names of the layers
        self.scopes = set()     # their enclosing names ("layer1", "layer1.0")
        self.count = 0
        self.origin = {}        # constant made from an initializer -> its name

    def const(self, node, i, what, shape_ok=False):
        name = node.input[i] if i < len(node.input) else ""
        if not name:
            return None
        if name not in self.constants:
            raise _form(node, f"its {what} ({name!r}) must be a constant (an initializer)")
        value = self.constants[name]
        if isinstance(value, _ShapeOf) and not shape_ok:
            raise _form(node, f"its {what} ({name!r}) is computed from a tensor's shape; "
                              "only Resize's sizes may be")
        return value

    def param(self, value):
        return np.array(value, dtype=self.dtype)

    def layer_name(self, node, weight_input=None):
        """The weight's PyTorch-style prefix when it has one that is free,
        else '<op>_<n>'."""
        name = node.input[weight_input] if weight_input is not None else ""
        name = self.origin.get(name, name)
        if name.endswith(".weight") and _TORCH_KEY.match(name):
            prefix = name[:-len(".weight")]
            parts = prefix.split(".")
            outer = [".".join(parts[:i]) for i in range(1, len(parts))]
            if (prefix not in self.leaves and prefix not in self.scopes
                    and not self.leaves.intersection(outer)):
                self.leaves.add(prefix)
                self.scopes.update(outer)
                return prefix
        while True:
            self.count += 1
            flat = f"{node.op_type.lower()}_{self.count}"
            if flat not in self.leaves and flat not in self.scopes:
                self.leaves.add(flat)
                return flat


class _ShapeOf:
    """A shape computed in the graph, as PyTorch writes Resize's sizes
    (Concat(Slice(Shape(x), 0, 2), [oh, ow])): the first `lead` sizes of
    tensor `source`, then the constants `tail`."""

    def __init__(self, source, lead, tail=()):
        self.source, self.lead, self.tail = source, lead, tuple(int(t) for t in tail)


def _form(node, why):
    return ValueError(f"convcore.onnx.load: node {node.name or node.output[0]!r} "
                      f"({node.op_type}) cannot be converted: {why}")


def _short(v):
    """A float stored as float32 by its shortest decimal: eps=1e-5 reads
    back as 1e-05, not 9.99999974e-06."""
    return float(str(np.float32(v)))


def _attrs(onnx, node):
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = _short(v) if isinstance(v, float) else v
    return out


def _spatial(node, attrs, kernel):
    """(stride, padding, dilation) of a 2-D conv/pool node; ONNX pads are
    (top, left, bottom, right), convcore's symmetric (h, w)."""
    if len(kernel) != 2:
        raise _form(node, f"only 2-D windows are supported, got kernel {list(kernel)}")
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    stride = tuple(attrs.get("strides", (1, 1)))
    dilation = tuple(attrs.get("dilations", (1, 1)))
    if auto_pad in ("NOTSET", "VALID"):
        pads = list(attrs.get("pads", (0, 0, 0, 0))) if auto_pad == "NOTSET" else [0] * 4
    elif stride == (1, 1) and all(d * (k - 1) % 2 == 0 for d, k in zip(dilation, kernel)):
        half = [d * (k - 1) // 2 for d, k in zip(dilation, kernel)]
        pads = half + half
    else:
        raise _form(node, f"auto_pad={auto_pad} with stride {stride} pads unevenly")
    if pads[:2] != pads[2:]:
        raise _form(node, f"pads {pads} are not symmetric (convcore pads both sides "
                          "equally)")
    return stride, tuple(pads[:2]), dilation


def _conv(ctx, node, attrs):
    w = ctx.const(node, 1, "weight")
    b = ctx.const(node, 2, "bias")
    groups = int(attrs.get("group", 1))
    kernel = attrs.get("kernel_shape", w.shape[2:])
    stride, padding, dilation = _spatial(node, attrs, kernel)
    m = Conv2d(w.shape[1] * groups, w.shape[0], tuple(kernel), stride=stride,
               padding=padding, dilation=dilation, groups=groups, bias=b is not None,
               dtype=ctx.dtype)
    m.weight.data = ctx.param(w)
    if b is not None:
        m.bias.data = ctx.param(b)
    return m, 1


def _linear(ctx, weight, bias=None):
    """Linear computing x @ weight.T + bias."""
    m = Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=ctx.dtype)
    m.weight.data = ctx.param(weight)
    if bias is not None:
        m.bias.data = ctx.param(np.broadcast_to(np.ravel(bias), (weight.shape[0],)))
    return m


def _gemm(ctx, node, attrs):
    if attrs.get("transA", 0):
        raise _form(node, "transA=1 (a transposed input) is not a Linear layer")
    b = ctx.const(node, 1, "weight B")
    c = ctx.const(node, 2, "bias C")
    w = b if attrs.get("transB", 0) else b.T
    w = w * attrs.get("alpha", 1.0)
    if c is not None:
        c = np.asarray(c) * attrs.get("beta", 1.0)
        if c.size not in (1, w.shape[0]):
            raise _form(node, f"bias C of shape {c.shape} is not per output feature")
    return _linear(ctx, w, c), 1


def _matmul(ctx, node, attrs):
    b = ctx.const(node, 1, "weight (second input)")
    if b.ndim != 2:
        raise _form(node, f"weight of shape {b.shape} is not a matrix")
    return _linear(ctx, b.T), 1


def _batch_norm(ctx, node, attrs):
    if len([o for o in node.output if o]) > 1 or attrs.get("training_mode", 0):
        raise _form(node, "only the inference form (one output) is supported")
    scale, shift, mean, var = (ctx.const(node, i, what) for i, what in
                               enumerate(("scale", "B", "mean", "var"), 1))
    rank = ctx.ranks.get(node.input[0], 4)
    cls = BatchNorm2d if rank == 4 else BatchNorm1d
    # ONNX keeps `momentum` of the old statistics; torch of the new batch's
    m = cls(scale.shape[0], eps=attrs.get("epsilon", 1e-5),
            momentum=_short(1.0 - attrs.get("momentum", 0.9)), dtype=ctx.dtype)
    m.weight.data, m.bias.data = ctx.param(scale), ctx.param(shift)
    m.running_mean, m.running_var = ctx.param(mean), ctx.param(var)
    return m, 1


def _clip(ctx, node, attrs):
    lo = ctx.const(node, 1, "min") if len(node.input) > 1 else attrs.get("min")
    hi = ctx.const(node, 2, "max") if len(node.input) > 2 else attrs.get("max")
    lo = None if lo is None else float(lo)
    hi = None if hi is None else float(hi)
    if lo == 0.0 and hi == 6.0:
        return ReLU6(dtype=ctx.dtype), None
    if lo == 0.0 and hi is None:
        return ReLU(dtype=ctx.dtype), None
    raise _form(node, f"only Clip(0, 6) (ReLU6) and Clip(0) (ReLU) are layers; got "
                      f"min={lo}, max={hi}")


def _pool(ctx, node, attrs):
    if len([o for o in node.output if o]) > 1:
        raise _form(node, "the Indices output is not supported")
    kernel = tuple(attrs["kernel_shape"])
    stride, padding, dilation = _spatial(node, attrs, kernel)
    ceil = bool(attrs.get("ceil_mode", 0))
    if node.op_type == "MaxPool":
        return MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil,
                         dtype=ctx.dtype), None
    if dilation != (1, 1):
        raise _form(node, f"dilations {list(dilation)} in average pooling")
    return AvgPool2d(kernel, stride, padding, ceil_mode=ceil,
                     count_include_pad=bool(attrs.get("count_include_pad", 0)),
                     dtype=ctx.dtype), None


def _dropout(ctx, node, attrs):
    """Dropout stays a layer: the identity in eval mode, dropping again
    when the loaded model is fine-tuned."""
    if len([o for o in node.output if o]) > 1:
        raise _form(node, "the mask output is not supported")
    ratio = ctx.const(node, 1, "ratio") if len(node.input) > 1 else None
    p = float(attrs.get("ratio", 0.5) if ratio is None else ratio)
    return Dropout(p, dtype=ctx.dtype), None


def _flatten(ctx, node, attrs):
    axis = attrs.get("axis", 1)
    if axis != 1:
        raise _form(node, f"axis={axis}: only Flatten(axis=1) (keep the batch) is a layer")
    return Flatten(1, -1, dtype=ctx.dtype), None


def _reshape(ctx, node, attrs):
    if attrs.get("allowzero", 0):
        raise _form(node, "allowzero=1 is not supported")
    return Reshape(ctx.const(node, 1, "shape")), None


def _layer_norm(ctx, node, attrs):
    scale, shift = ctx.const(node, 1, "scale"), ctx.const(node, 2, "B")
    axis, rank = attrs.get("axis", -1), ctx.ranks.get(node.input[0])
    if rank is not None and axis % rank != rank - scale.ndim:
        raise _form(node, f"axis={axis} does not normalise over the scale's "
                          f"{scale.ndim} trailing dimensions")
    m = LayerNorm(scale.shape, eps=attrs.get("epsilon", 1e-5), dtype=ctx.dtype)
    m.weight.data = ctx.param(scale)
    m.bias.data = ctx.param(np.zeros(scale.shape) if shift is None else shift)
    return m, 1


def _conv_transpose(ctx, node, attrs):
    w = ctx.const(node, 1, "weight")
    b = ctx.const(node, 2, "bias")
    if "output_shape" in attrs:
        raise _form(node, "output_shape is not supported; give pads and output_padding")
    auto_pad = _text(attrs.get("auto_pad", "NOTSET"))
    if auto_pad not in ("NOTSET", "VALID"):
        # SAME_* pad the output of a transposed convolution, not the input
        raise _form(node, f"auto_pad={auto_pad} is not supported; give pads")
    groups = int(attrs.get("group", 1))
    kernel = attrs.get("kernel_shape", w.shape[2:])
    stride, padding, dilation = _spatial(node, attrs, kernel)
    m = ConvTranspose2d(w.shape[0], w.shape[1] * groups, tuple(kernel), stride=stride,
                        padding=padding, output_padding=tuple(attrs.get("output_padding",
                                                                        (0, 0))),
                        groups=groups, bias=b is not None, dilation=dilation,
                        dtype=ctx.dtype)
    m.weight.data = ctx.param(w)
    if b is not None:
        m.bias.data = ctx.param(b)
    return m, 1


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


# Resize's (mode, coordinate_transformation_mode, nearest_mode) ->
# Upsample's (mode, align_corners); the inverse of export's table, with the
# other spellings PyTorch and TensorFlow converters use for the same rules
_UPSAMPLE = {
    ("nearest", "asymmetric", "floor"): ("nearest", None),
    ("nearest", "half_pixel", "round_prefer_ceil"): ("nearest-exact", None),
    ("nearest", "tf_half_pixel_for_nn", "floor"): ("nearest-exact", None),
    ("linear", "align_corners"): ("bilinear", True),
    ("linear", "half_pixel"): ("bilinear", False),
    # differs from torch only for an output of one pixel (it reads source 0)
    ("linear", "pytorch_half_pixel"): ("bilinear", False),
}


def _resize(ctx, node, attrs):
    if ctx.opset < 11:
        raise _form(node, f"opset {ctx.opset}'s Resize (scales as the second input) is not "
                          "read; re-export with opset >= 11")
    mode = _text(attrs.get("mode", "nearest"))
    transform = _text(attrs.get("coordinate_transformation_mode", "half_pixel"))
    key = (mode, transform) if mode == "linear" else (
        mode, transform, _text(attrs.get("nearest_mode", "round_prefer_floor")))
    if key not in _UPSAMPLE or attrs.get("antialias", 0) or _text(
            attrs.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
        raise _form(node, f"mode={mode!r}, coordinate_transformation_mode={transform!r}"
                          f"{'' if mode == 'linear' else f', nearest_mode={key[2]!r}'} is not "
                          "one of torch's interpolations (nearest, nearest-exact, bilinear)")
    upsample_mode, corners = _UPSAMPLE[key]
    axes = tuple(a % 4 for a in attrs.get("axes", (0, 1, 2, 3)))
    scales = ctx.const(node, 2, "scales")
    sizes = ctx.const(node, 3, "sizes", shape_ok=True)
    if scales is not None and scales.size:
        scales = dict(zip(axes, (_short(v) for v in np.ravel(scales))))
        if scales.get(0, 1.0) != 1.0 or scales.get(1, 1.0) != 1.0:
            raise _form(node, f"scales {scales} resize the batch or channel axis")
        factor = (scales.get(2, 1.0), scales.get(3, 1.0))
        return Upsample(scale_factor=factor, mode=upsample_mode, align_corners=corners,
                        dtype=ctx.dtype), None
    if isinstance(sizes, _ShapeOf):
        if sizes.lead != 2 or len(sizes.tail) != 2 or sizes.source != node.input[0]:
            raise _form(node, "its sizes must be the input's batch and channels, then "
                              "two constants")
        size = sizes.tail
    elif sizes is not None and axes == (2, 3):
        size = tuple(np.ravel(sizes).tolist())
    elif sizes is not None and len(axes) == 4 and np.size(sizes) == 4:
        # N and C fixed in the file; Upsample keeps the input's own
        size = tuple(np.ravel(sizes)[2:].tolist())
    else:
        raise _form(node, "it needs constant scales or sizes of the two spatial axes")
    return Upsample(size=tuple(int(s) for s in size), mode=upsample_mode,
                    align_corners=corners, dtype=ctx.dtype), None


def _softmax(ctx, node, attrs):
    axis = attrs.get("axis", -1 if ctx.opset >= 13 else 1)
    rank = ctx.ranks.get(node.input[0])
    if ctx.opset < 13 and (rank is None or axis % rank != rank - 1):
        # before opset 13 Softmax normalised all axes from `axis` on together
        raise _form(node, f"opset {ctx.opset}'s Softmax over axes {axis}.. is not a "
                          "softmax along one dimension")
    cls = LogSoftmax if node.op_type == "LogSoftmax" else Softmax
    return cls(dim=int(axis), dtype=ctx.dtype), None


def _simple(make):
    return lambda ctx, node, attrs: (make(ctx, attrs), None)


# op type -> converter(ctx, node, attrs) -> (module, index of the input
# naming the layer, or None). The _WIRING ops are wired by load() itself:
# Identity, Add/Sub/Mul/Div (two tensors, or a tensor and a constant),
# Concat, Transpose, and what computes constants (Constant, Cast, and
# Shape and Slice for Resize's sizes).
_CONVERTERS = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batch_norm,
    "Clip": _clip, "Dropout": _dropout, "MaxPool": _pool, "AveragePool": _pool, "Flatten": _flatten,
    "Reshape": _reshape, "LayerNormalization": _layer_norm,
    "ConvTranspose": _conv_transpose, "Resize": _resize, "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "Gelu": _simple(lambda ctx, a: GELU(_text(a.get("approximate", "none")), dtype=ctx.dtype)),
    "GlobalMaxPool": _simple(lambda ctx, a: AdaptiveMaxPool2d(1, dtype=ctx.dtype)),
    "Erf": _simple(lambda ctx, a: Erf()),
    "Relu": _simple(lambda ctx, a: ReLU(dtype=ctx.dtype)),
    "Sigmoid": _simple(lambda ctx, a: Sigmoid(dtype=ctx.dtype)),
    "Tanh": _simple(lambda ctx, a: Tanh(dtype=ctx.dtype)),
    "Softplus": _simple(lambda ctx, a: Softplus(dtype=ctx.dtype)),
    "LeakyRelu": _simple(lambda ctx, a: LeakyReLU(a.get("alpha", 0.01), dtype=ctx.dtype)),
    "GlobalAveragePool": _simple(lambda ctx, a: AdaptiveAvgPool2d(1, dtype=ctx.dtype)),
    "LRN": _simple(lambda ctx, a: LocalResponseNorm(
        a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0),
        dtype=ctx.dtype)),
}
_WIRING = ("Identity", "Add", "Sub", "Mul", "Div", "Concat", "Constant", "Cast", "Transpose",
           "Shape", "Slice")
SUPPORTED_OPS = tuple(sorted((*_CONVERTERS, *_WIRING)))


def _fold_constant(onnx, ctx, node, attrs):
    """Compute a node whose result is a constant (a weight, a bound) into
    ctx.constants; False when the node is not one."""
    op, out = node.op_type, node.output[0]
    if op == "Constant":
        if "value" not in attrs:
            raise _form(node, f"only a tensor `value` is read, not {list(attrs)}")
        ctx.constants[out] = onnx.numpy_helper.to_array(attrs["value"])
    elif op == "Cast":   # PyTorch's Clip bounds, unfolded
        ctx.constants[out] = ctx.const(node, 0, "input").astype(
            onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
    elif op == "Transpose" and node.input[0] in ctx.constants:   # Linear on N-D inputs
        ctx.constants[out] = np.transpose(ctx.const(node, 0, "input"), attrs.get("perm"))
        ctx.origin[out] = node.input[0]   # the layer's name comes from it
    elif op == "Identity" and node.input[0] in ctx.constants:
        # PyTorch shares equal weights so
        ctx.constants[out] = ctx.constants[node.input[0]]
    elif op == "Shape":
        if attrs.get("start", 0) != 0 or "end" in attrs:
            raise _form(node, "only the whole shape (no start, end) is read")
        ctx.constants[out] = _ShapeOf(node.input[0], ctx.ranks.get(node.input[0], 99))
    elif op == "Slice":
        ctx.constants[out] = _slice_shape(ctx, node)
    elif op == "Concat" and isinstance(ctx.constants.get(node.input[0]), _ShapeOf):
        first = ctx.const(node, 0, "shape", shape_ok=True)
        if first.tail or attrs.get("axis") not in (0, -1):
            raise _form(node, "only a shape's leading sizes followed by constants are read")
        tail = np.concatenate([np.ravel(ctx.const(node, i, "size"))
                               for i in range(1, len(node.input))])
        ctx.constants[out] = _ShapeOf(first.source, first.lead, tail)
    else:
        return False
    return True


def _slice_shape(ctx, node):
    """Slice(Shape(x), 0, k): x's first k sizes."""
    shape = ctx.constants.get(node.input[0])
    if not isinstance(shape, _ShapeOf):
        raise _form(node, "only a slice of a Shape (Resize's sizes) is supported")
    starts, ends = (np.ravel(ctx.const(node, i, what)).tolist()
                    for i, what in ((1, "starts"), (2, "ends")))
    axes = ctx.const(node, 3, "axes")
    steps = ctx.const(node, 4, "steps")
    if (shape.tail or starts != [0] or len(ends) != 1 or (axes is not None and np.ravel(
            axes).tolist() not in ([0], [-1])) or (steps is not None and
                                                   np.ravel(steps).tolist() != [1])):
        raise _form(node, "only the leading sizes of a shape (starts 0, step 1) are read")
    return _ShapeOf(shape.source, min(shape.lead, ends[0]))


def _arithmetic(ctx, node, made_by, consumers, data):
    """Add, Sub, Mul, Div of two tensors or of a tensor and a constant ->
    (module, its inputs), or None when an Add's constant became the bias
    of the MatMul before it."""
    op, (a, b) = node.op_type, node.input
    if a in ctx.constants or b in ctx.constants:
        x, c = (b, a) if a in ctx.constants else (a, b)
        value = np.asarray(ctx.const(node, list(node.input).index(c), "operand"))
        if op == "Add":
            layer = made_by.get(data(x))
            if (isinstance(layer, Linear) and layer.bias is None and consumers.get(x) == 1
                    and value.size in (1, layer.out_features)):
                layer.bias = _linear(ctx, layer.weight.data, value).bias
                return None
        if op in ("Sub", "Div") and x != a:
            raise _form(node, f"{op} of a tensor from a constant is not supported")
        value = ctx.param(value)
        module = {"Add": lambda: Shift(value), "Sub": lambda: Shift(-value),
                  "Mul": lambda: Scale(value), "Div": lambda: Scale(1 / value)}[op]()
        return module, [data(x)]
    if op == "Add":
        return Add(), [data(a), data(b)]
    if op == "Mul":   # x * Sigmoid(x): SiLU
        return Mul(), [data(a), data(b)]
    raise _form(node, f"{op} of two tensors is not supported (only Add and Mul are)")


def _op_name(node):
    """The operator's type, with its domain when not the standard one
    ("com.microsoft:FusedConv")."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"


def _read(onnx, source):
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        return onnx.load_from_string(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        return onnx.load(os.fspath(source))
    raise TypeError("convcore.onnx.load: path_or_model must be a path, bytes or an "
                    f"onnx.ModelProto, got {type(source).__name__}")


def _ranks(onnx, proto):
    """Rank of every tensor whose shape ONNX shape inference finds."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:   # inference is a help for BatchNorm1d/2d, not a need
        inferred = proto.graph
    ranks = {}
    for vi in (*inferred.input, *inferred.value_info, *inferred.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            ranks[vi.name] = len(t.shape.dim)
    return ranks


def load(path_or_model: Union[PathLike, bytes, Any], *,
         dtype: Optional[DTypeLike] = None) -> Graph:
    """Build a convcore model from an ONNX model.

    Parameters
    ----------
    path_or_model : path of an .onnx file, its bytes, or an onnx.ModelProto
        with one input and one output, whose operators are among
        SUPPORTED_OPS (as PyTorch's torch.onnx.export and
        convcore.onnx.export write CNNs; Clip only as ReLU6/ReLU, MatMul and
        Gemm with constant weights, Resize with torch's coordinate modes,
        Shape and Slice only to compute Resize's sizes).
    dtype : float32 or float64 for the layers; default the model's.

    Returns a convcore.onnx.graph.Graph: a Module with forward, backward,
    parameters() and state_dict(), in training mode as any new model (call
    .eval() for inference). A model with operators outside SUPPORTED_OPS
    raises ValueError listing all of them.
    """
    onnx = require_onnx()
    proto = _read(onnx, path_or_model)
    g = proto.graph
    unsupported = sorted({_op_name(n) for n in g.node} - set(SUPPORTED_OPS))
    if unsupported:
        raise ValueError(f"convcore.onnx.load: unsupported ONNX operators: "
                         f"{', '.join(unsupported)} (supported: {', '.join(SUPPORTED_OPS)})")
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in constants]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ValueError(f"convcore.onnx.load: the graph must have one input and one "
                         f"output, got inputs {inputs} and outputs "
                         f"{[o.name for o in g.output]}")
    if dtype is None:
        elem = next(i for i in g.input if i.name == inputs[0]).type.tensor_type.elem_type
        dtype = np.float64 if elem == onnx.TensorProto.DOUBLE else np.float32
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"convcore.onnx.load: dtype must be float32 or float64, got {dtype}")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    ctx = _Context(constants, _ranks(onnx, proto), dtype, opset)
    consumers: Dict[str, int] = {}
    for n in g.node:
        for t in n.input:
            consumers[t] = consumers.get(t, 0) + 1
    alias: Dict[str, str] = {}
    nodes: List[Node] = []
    made_by: Dict[str, Node] = {}

    def data(name):
        return alias.get(name, name)

    with init.skip_init():
        for n in g.node:
            attrs = _attrs(onnx, n)
            op = n.op_type
            if _fold_constant(onnx, ctx, n, attrs):
                continue
            if op == "Identity":
                alias[n.output[0]] = data(n.input[0])
                continue
            if op in ("Add", "Sub", "Mul", "Div"):
                made = _arithmetic(ctx, n, made_by, consumers, data)
                if made is None:   # a bias
                    alias[n.output[0]] = data(n.input[0] if n.input[1] in constants
                                              else n.input[1])
                    continue
                (module, ins), name = made, ctx.layer_name(n)
            elif op == "Transpose":
                if "perm" not in attrs:
                    raise _form(n, "a perm is needed (the default reverses the axes)")
                module, ins = Transpose(attrs["perm"]), [data(n.input[0])]
                name = ctx.layer_name(n)
            elif op == "Concat":
                module, ins = Cat(attrs["axis"]), [data(t) for t in n.input]
                name = ctx.layer_name(n)
            else:
                if n.input[0] in constants:
                    raise _form(n, f"its data input ({n.input[0]!r}) is a constant")
                module, weight_input = _CONVERTERS[op](ctx, n, attrs)
                ins = [data(n.input[0])]
                name = ctx.layer_name(n, weight_input)
            nodes.append(Node(name, module, ins, n.output[0]))
            made_by[n.output[0]] = module
    output = data(g.output[0].name)
    if output == inputs[0] or output in constants:
        raise ValueError("convcore.onnx.load: the graph's output is its input or a "
                         "constant; there are no layers to build")
    return Graph(nodes, inputs[0], output)
