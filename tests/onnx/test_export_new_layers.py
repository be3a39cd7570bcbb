"""The layers added after convcore.onnx was written (ConvTranspose2d,
Upsample, GELU, SiLU, Softmax/LogSoftmax, Dropout2d, AdaptiveMaxPool2d,
channels-last layers, GoogLeNet's TransformInput): each exported, checked
by onnx.checker, run by onnxruntime against convcore's eval forward,
loaded back (same forward and input gradient) and written again; the
operators and attributes chosen; the Graph layers that loading them
needs (Mul, Scale, Shift, Erf, Transpose) against finite differences;
and PyTorch's exports of the same layers loaded against torch."""
import io
import warnings

import numpy as np
import pytest
from scipy import special

import convcore
from convcore import nn
from convcore.models import TransformInput
from nn_helpers import check_module_gradients

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from convcore.onnx import export, load  # noqa: E402
from convcore.onnx.graph import Erf, Mul, Scale, Shift, Transpose  # noqa: E402

CL = {"data_format": "channels_last"}

LAYERS = {
    "conv_transpose": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                  output_padding=1, groups=2, dilation=2),
                       (1, 4, 5, 6)),
    "conv_transpose_1x1_no_bias": (lambda: nn.ConvTranspose2d(3, 2, 1, bias=False),
                                   (1, 3, 1, 1)),
    "conv_transpose_stride3": (lambda: nn.ConvTranspose2d(2, 3, (2, 3), stride=(3, 2),
                                                          padding=(0, 1), output_padding=(2, 1)),
                               (1, 2, 4, 3)),
    "nearest_scale2": (lambda: nn.Upsample(scale_factor=2), (1, 2, 3, 4)),
    "nearest_scale1.5": (lambda: nn.Upsample(scale_factor=1.5), (1, 2, 5, 7)),
    "nearest_size": (lambda: nn.Upsample(size=(7, 5)), (1, 2, 3, 4)),
    "nearest_exact_size": (lambda: nn.Upsample(size=(7, 3), mode="nearest-exact"),
                           (1, 2, 3, 4)),
    "nearest_exact_scales": (lambda: nn.Upsample(scale_factor=(0.5, 1.7), mode="nearest-exact"),
                             (1, 2, 6, 5)),
    "bilinear_size": (lambda: nn.Upsample(size=(7, 5), mode="bilinear"), (1, 2, 3, 4)),
    "bilinear_to_one_row": (lambda: nn.Upsample(size=(1, 5), mode="bilinear"), (1, 2, 3, 4)),
    "bilinear_align_corners": (lambda: nn.Upsample(size=(7, 5), mode="bilinear",
                                                   align_corners=True), (1, 2, 3, 4)),
    "bilinear_scale": (lambda: nn.Upsample(scale_factor=1.7, mode="bilinear"), (1, 2, 3, 4)),
    "bilinear_recompute": (lambda: nn.Upsample(scale_factor=1.7, mode="bilinear",
                                               recompute_scale_factor=True), (1, 2, 3, 4)),
    "gelu": (lambda: nn.GELU(), (1, 3, 4)),
    "gelu_tanh": (lambda: nn.GELU("tanh"), (1, 3, 4)),
    "silu": (lambda: nn.SiLU(), (1, 3, 2, 2)),
    "softmax": (lambda: nn.Softmax(1), (1, 3, 4)),
    "softmax_legacy_dim": (lambda: nn.Softmax(), (1, 3, 2, 2)),
    "log_softmax": (lambda: nn.LogSoftmax(-1), (1, 3, 4)),
    "dropout2d": (lambda: nn.Sequential(nn.Dropout2d(0.5), nn.ReLU()), (1, 3, 2, 2)),
    "adaptive_max_global": (lambda: nn.AdaptiveMaxPool2d(1), (1, 3, 4, 5)),
    "adaptive_max_even": (lambda: nn.AdaptiveMaxPool2d((2, 5)), (1, 3, 4, 5)),
    "adaptive_max_same": (lambda: nn.Sequential(nn.AdaptiveMaxPool2d((None, 5)), nn.ReLU()),
                          (1, 3, 4, 5)),
    "channels_last_network": (lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, **CL), nn.BatchNorm2d(4, **CL), nn.ReLU(),
        nn.MaxPool2d(2, **CL), nn.AvgPool2d(1, **CL), nn.AdaptiveAvgPool2d((3, 1), **CL),
        nn.AdaptiveMaxPool2d(1, **CL), nn.Flatten(**CL), nn.Linear(4, 3)), (1, 6, 7, 3)),
    "channels_last_flatten_middle": (lambda: nn.Flatten(1, 2, **CL), (1, 2, 3, 4)),
    "transform_input": (lambda: nn.Sequential(TransformInput(), nn.Conv2d(3, 2, 1)),
                        (1, 3, 4, 4)),
}
# Gelu is an operator from opset 20; before, its Erf or Tanh decomposition
OPSETS = (17, 20)


def _randomize(model, rng):
    for p in model.parameters():
        p.data = rng.uniform(-0.5, 0.5, p.data.shape).astype(p.data.dtype)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = rng.uniform(-0.5, 0.5, m.num_features).astype(np.float32)
            m.running_var = rng.uniform(0.5, 2.0, m.num_features).astype(np.float32)
            m.bump_buffers()
    return model


def _onnxruntime(proto, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _ops(proto):
    return [n.op_type for n in proto.graph.node]


def _close(got, expected, tol=1e-5):
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=tol,
                               atol=tol * max(1.0, float(np.abs(expected).max())))


def _forward_and_input_grad(model, x, gy):
    y = model(x)
    return y, model.backward(gy)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_exports_runs_and_loads_back(name, opset, rng):
    build, shape = LAYERS[name]
    model = _randomize(build(), rng)
    proto = export(model, shape, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    # a batch of another size than the exported shape: the batch is dynamic
    x = rng.standard_normal((3,) + shape[1:]).astype(np.float32)
    x_before = x.copy()
    model.eval()
    with convcore.no_grad():
        expected = model(x)
    _close(_onnxruntime(proto, x), expected)
    np.testing.assert_array_equal(x, x_before)

    loaded = load(proto).eval()
    gy = rng.standard_normal(expected.shape).astype(np.float32)
    y, gx = _forward_and_input_grad(loaded, x, gy)
    y_ref, gx_ref = _forward_and_input_grad(model, x, gy)
    _close(y, expected)
    _close(gx, gx_ref)
    # and written again, onnxruntime computes the same
    again = export(loaded, shape, opset=opset)
    _close(_onnxruntime(again, x), expected)


@pytest.mark.parametrize("opset", OPSETS)
def test_float64_graph_loads_back_exactly(opset, rng):
    """(onnxruntime has no float64 Erf or Resize kernels: convcore runs it)"""
    model = _randomize(nn.Sequential(
        nn.Conv2d(2, 3, 1, dtype=np.float64), nn.Upsample(scale_factor=2, mode="bilinear"),
        nn.GELU(), nn.SiLU(), nn.Flatten(), nn.Linear(3 * 16, 4, dtype=np.float64),
        nn.LogSoftmax(1)), rng)
    proto = export(model, (1, 2, 2, 2), opset=opset, dtype=np.float64)
    x = rng.standard_normal((3, 2, 2, 2))
    loaded = load(proto).eval()
    y = loaded(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, model.eval()(x), rtol=1e-13, atol=1e-14)


RESIZE_ATTRS = {
    "nearest_size": ("nearest", "asymmetric", "floor"),
    "nearest_exact_size": ("nearest", "half_pixel", "round_prefer_ceil"),
    "bilinear_size": ("linear", "half_pixel", "floor"),
    "bilinear_align_corners": ("linear", "align_corners", "floor"),
}


@pytest.mark.parametrize("name", list(RESIZE_ATTRS))
def test_resize_coordinate_modes(name):
    build, shape = LAYERS[name]
    proto = export(build(), shape, opset=18)
    (node,) = proto.graph.node
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert (attrs["mode"], attrs["coordinate_transformation_mode"],
            attrs["nearest_mode"]) == tuple(s.encode() for s in RESIZE_ATTRS[name])
    # opset 18 names the spatial axes; the sizes are constants
    assert attrs["axes"] == [2, 3]
    sizes = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert sizes[node.input[3]].tolist() == list(build()(np.zeros(shape, np.float32)).shape[2:])


def test_resize_sizes_before_opset_18_keep_the_batch_dynamic():
    proto = export(nn.Upsample(size=(5, 2)), (1, 2, 3, 4), opset=17)
    assert _ops(proto) == ["Shape", "Slice", "Concat", "Resize"]
    x = np.arange(4 * 2 * 3 * 4, dtype=np.float32).reshape(4, 2, 3, 4)
    assert _onnxruntime(proto, x).shape == (4, 2, 5, 2)


@pytest.mark.parametrize("opset, ops", [
    (17, ["Div", "Erf", "Add", "Mul", "Mul"]),
    (20, ["Gelu"]),
])
def test_gelu_operator_or_decomposition(opset, ops):
    assert _ops(export(nn.GELU(), (1, 4), opset=opset)) == ops
    loaded = load(export(nn.GELU("tanh"), (1, 4), opset=opset))
    x = np.linspace(-3, 3, 8, dtype=np.float32).reshape(2, 4)
    _close(loaded(x), nn.GELU("tanh")(x))


def test_the_nodes_of_the_other_layers():
    assert _ops(export(nn.SiLU(), (1, 3))) == ["Sigmoid", "Mul"]
    softmax = export(nn.Softmax(), (1, 3, 2, 2)).graph.node[0]
    assert (softmax.op_type, softmax.attribute[0].i) == ("Softmax", 1)
    assert _ops(export(nn.Sequential(nn.Dropout2d(), nn.Tanh()), (1, 3, 2, 2))) == ["Tanh"]
    assert _ops(export(nn.AdaptiveMaxPool2d(1), (1, 3, 4, 4))) == ["GlobalMaxPool"]
    pool = export(nn.AdaptiveMaxPool2d((2, 1)), (1, 3, 4, 6)).graph.node[0]
    assert pool.op_type == "MaxPool"
    assert [list(a.ints) for a in pool.attribute if a.name in ("kernel_shape", "strides")] \
        == [[2, 6], [2, 6]]
    # a channels-last layer between Transposes (to NCHW and back)
    proto = export(nn.Conv2d(3, 2, 1, **CL), (1, 4, 4, 3))
    assert _ops(proto) == ["Transpose", "Conv", "Transpose"]
    assert [list(n.attribute[0].ints) for n in (proto.graph.node[0], proto.graph.node[2])] \
        == [[0, 3, 1, 2], [0, 2, 3, 1]]
    # channels-last Flatten flattens in NCHW order: no Transpose back
    assert _ops(export(nn.Flatten(**CL), (1, 2, 2, 3))) == ["Transpose", "Flatten"]


@pytest.mark.parametrize("model, fragment", [
    (nn.Sequential(nn.ReLU(), nn.AdaptiveMaxPool2d((3, 2))),
     "AdaptiveMaxPool2d at '1'.*output size \\(3, 2\\) does not divide the input's \\(4, 4\\)"),
    (nn.Sequential(nn.AdaptiveMaxPool2d(1, return_indices=True)),
     "AdaptiveMaxPool2d at '0'.*return_indices"),
])
def test_what_cannot_be_exported_is_named(model, fragment):
    with pytest.raises(ValueError, match=fragment):
        export(model, (1, 2, 4, 4))


GRAPH_LAYERS = {
    "scale_per_channel": (lambda rng: Scale(rng.uniform(0.5, 2, (1, 3, 1, 1))), [(2, 3, 2, 2)]),
    "shift_scalar": (lambda rng: Shift(np.array(0.7)), [(2, 3)]),
    "erf": (lambda rng: Erf(), [(2, 5)]),
    "transpose": (lambda rng: Transpose((0, 2, 3, 1)), [(2, 3, 1, 2)]),
}


@pytest.mark.parametrize("name", list(GRAPH_LAYERS))
def test_graph_layers_backward_by_finite_differences(name, rng):
    build, (shape,) = GRAPH_LAYERS[name]
    check_module_gradients(build(rng), rng.standard_normal(shape), rng)


def test_graph_layers_forward_against_numpy(rng):
    x = rng.standard_normal((2, 3, 2, 2))
    c = rng.standard_normal((1, 3, 1, 1))
    np.testing.assert_array_equal(Scale(c)(x), x * c)
    np.testing.assert_array_equal(Shift(c)(x), x + c)
    np.testing.assert_allclose(Erf()(x), special.erf(x), rtol=1e-15)
    np.testing.assert_array_equal(Transpose((0, 2, 3, 1))(x), np.moveaxis(x, 1, -1))
    # float32 stays float32 through the constants' float64
    x32 = x.astype(np.float32)
    assert Scale(c)(x32).dtype == Shift(c)(x32).dtype == np.float32
    erf = Erf()
    assert erf(x32).dtype == np.float32
    assert erf.backward(np.ones_like(x32)).dtype == np.float32


def test_mul_of_two_tensors_backward(rng):
    """x * Sigmoid(x) loaded as Sigmoid and Mul: the input gradient sums
    both paths; Mul broadcasts and sums its gradients back."""
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 1))
    mul = Mul()
    y = mul(a, b)
    gy = rng.standard_normal(y.shape)
    ga, gb = mul.backward(gy)
    np.testing.assert_allclose(ga, gy * b)
    np.testing.assert_allclose(gb, (gy * a).sum(axis=0).sum(axis=1, keepdims=True))
    loaded = load(export(nn.SiLU(dtype=np.float64), (1, 5), dtype=np.float64))
    check_module_gradients(loaded, rng.standard_normal((2, 5)), rng)


@pytest.mark.parametrize("node, inits, fragment", [
    (onnx.helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic"),
     {"s": np.array([1, 1, 2, 2], np.float32)}, "mode='cubic'"),
    (onnx.helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear"),
     {"s": np.array([1, 2, 2, 2], np.float32)}, "resize the batch or channel axis"),
    (onnx.helper.make_node("ConvTranspose", ["x", "w"], ["y"], output_shape=[4, 4]),
     {"w": np.ones((3, 1, 2, 2), np.float32)}, "output_shape"),
    (onnx.helper.make_node("ConvTranspose", ["x", "w"], ["y"], auto_pad="SAME_UPPER"),
     {"w": np.ones((3, 1, 2, 2), np.float32)}, "auto_pad=SAME_UPPER"),
    (onnx.helper.make_node("Resize", ["x", "", "", "s"], ["y"], mode="linear"),
     {"s": np.array([3], np.int64)}, "constant scales or sizes of the two spatial axes"),
])
def test_unconvertible_new_node_forms(node, inits, fragment):
    helper = onnx.helper
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    with pytest.raises(ValueError, match=fragment):
        load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


# ------------------------------------------------ from PyTorch's exporter

torch = pytest.importorskip("torch")
T = torch.nn

# (torch's TorchScript exporter cannot write nearest-exact)
TORCH_LAYERS = {
    "conv_transpose": (lambda: T.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                 output_padding=1, groups=2, dilation=2),
                       (2, 4, 5, 6)),
    "nearest_scale": (lambda: T.Upsample(scale_factor=2), (2, 2, 3, 4)),
    "nearest_size": (lambda: T.Upsample(size=(7, 5)), (2, 2, 3, 4)),
    "bilinear": (lambda: T.Upsample(scale_factor=1.5, mode="bilinear"), (2, 2, 4, 6)),
    "bilinear_align_corners": (lambda: T.Upsample(size=(7, 5), mode="bilinear",
                                                  align_corners=True), (2, 2, 3, 4)),
    "gelu": (lambda: T.GELU(), (2, 3, 4)),
    "gelu_tanh": (lambda: T.GELU("tanh"), (2, 3, 4)),
    "silu": (lambda: T.SiLU(), (2, 3, 4)),
    "softmax": (lambda: T.Softmax(1), (2, 3, 4)),
    "log_softmax": (lambda: T.LogSoftmax(-1), (2, 3, 4)),
    "dropout2d_global_max": (lambda: T.Sequential(T.Dropout2d(), T.AdaptiveMaxPool2d(1)),
                             (2, 3, 4, 5)),
}


def _torch_onnx(net, shape, opset):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros((1,) + shape[1:]), buf, dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "n"}},
                          opset_version=opset)
    return buf.getvalue()


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("name", list(TORCH_LAYERS))
def test_torch_export_loads_and_gives_torch_outputs(name, opset, rng):
    build, shape = TORCH_LAYERS[name]
    torch.manual_seed(0)
    net = build().eval()
    model = load(_torch_onnx(net, shape, opset)).eval()
    x = rng.standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    _close(model(x), expected)
