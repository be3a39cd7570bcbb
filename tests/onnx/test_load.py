"""convcore.onnx.load: convcore export -> load round trips give the
original network (outputs, state_dict keys, gradients); the Graph module's
backward by finite differences; hand-built ONNX graphs for every
supported operator form and for the errors."""
import numpy as np
import pytest

import convcore
from convcore import models, nn
from gradcheck import directional_check

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from convcore.onnx import export, load  # noqa: E402
from convcore.onnx.graph import Add, Cat, Graph, Node, Reshape  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    previous = convcore.set_num_threads(1)
    yield
    convcore.set_num_threads(previous)


def _randomize_stats(model, rng):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = rng.uniform(-0.5, 0.5, m.num_features).astype(np.float32)
            m.running_var = rng.uniform(0.5, 2.0, m.num_features).astype(np.float32)
            m.bump_buffers()
    return model


ROUND_TRIP = {
    "lenet5": ({}, (1, 1, 32, 32)),
    "resnet18": ({"input_size": 32}, (1, 3, 32, 32)),
    "resnet20": ({"input_size": 32}, (1, 3, 32, 32)),
    "googlenet": ({"input_size": 64}, (1, 3, 64, 64)),
    "mobilenet_v2": ({"input_size": 32}, (1, 3, 32, 32)),
    "vgg11_lrn": ({"input_size": 32, "hidden": 16}, (1, 3, 32, 32)),
}


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_round_trip_gives_the_original_network(name, rng):
    kwargs, shape = ROUND_TRIP[name]
    model = _randomize_stats(models.get_model(name, num_classes=5, rng=1, **kwargs), rng)
    if name == "resnet20":
        # option-A shortcuts are written as Slice + Pad, which load does not read
        with pytest.raises(ValueError, match="unsupported ONNX operators: Pad "):
            load(export(model, shape))
        return
    back = load(export(model, shape))
    model.eval()
    back.eval()
    x = rng.standard_normal((2,) + shape[1:]).astype(np.float32)
    np.testing.assert_allclose(back(x), model(x), rtol=1e-5, atol=1e-6)
    # the same keys (the exported initializers' names), so state dicts move across
    assert list(back.state_dict()) == list(model.state_dict())
    back.load_state_dict(model.state_dict())


def _gradients(model, x, gy):
    model.zero_grad()
    model.train()
    y = model(x)
    gx = model.backward(gy)
    return y, gx, {k: p.grad.copy() for k, p in model.named_parameters()}


def test_round_trip_trains_like_the_original(rng):
    """Training mode (batch statistics) too: the same outputs, input and
    parameter gradients as the convcore model the file came from."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(4)), nn.Conv2d(4, 4, 1)),
        nn.Concat(nn.MaxPool2d(2), nn.AvgPool2d(2)), nn.Linear(2, 3),
        nn.Flatten(), nn.Linear(48, 3), nn.Tanh())
    back = load(export(model, (1, 3, 4, 4)))
    # Linear on a 4-D input: MatMul with a transposed weight, read back as one
    assert type(back.nodes[-4].module) is nn.Linear
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    gy = rng.standard_normal((2, 3)).astype(np.float32)
    y0, gx0, g0 = _gradients(model, x, gy)
    y1, gx1, g1 = _gradients(back, x, gy)
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx1, gx0, rtol=1e-4, atol=1e-6)
    assert g1.keys() == g0.keys()
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # fine-tuned, then written again: the same file, the new weights
    for p in back.parameters():
        p.data = p.data + 0.1
    again = export(back, (1, 3, 4, 4))
    assert [n.op_type for n in again.graph.node] == [
        n.op_type for n in export(model, (1, 3, 4, 4)).graph.node]
    back.eval()
    np.testing.assert_allclose(load(again).eval()(x), back(x), rtol=1e-5, atol=1e-6)


def test_graph_backward_by_finite_differences(rng):
    """A DAG with a tensor read three times, a broadcast Add and a Cat:
    the input gradient and a weight gradient, float64."""
    conv = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64, rng=0)
    lin = nn.Linear(3 * 4 * 4 * 2 + 0, 2, dtype=np.float64, rng=1)
    nodes = [Node("conv", conv, ["x"], "c"),
             Node("act", nn.Tanh(), ["c"], "t"),
             Node("sum", Add(), ["t", "c"], "s"),
             Node("cat", Cat(1), ["s", "t"], "k"),
             Node("scale", Add(), ["k", "one"], "k2"),
             Node("flat", Reshape([0, -1]), ["k2"], "f"),
             Node("head.fc", lin, ["f"], "y")]
    # "one": a (1, 6, 1, 1) tensor broadcast over the batch and space
    nodes.insert(0, Node("bias", nn.AdaptiveAvgPool2d(1), ["x"], "pooled"))
    nodes.insert(1, Node("widen", nn.Conv2d(2, 6, 1, dtype=np.float64, rng=2),
                         ["pooled"], "one"))
    graph = Graph(nodes, "x", "y")
    # the Graph exports too (onnxruntime runs it as convcore does)
    ort = pytest.importorskip("onnxruntime")
    proto = export(graph, (1, 2, 4, 4), dtype=np.float32)
    x32 = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x32})[0], graph(x32.astype(float)),
                               rtol=1e-5, atol=1e-6)
    assert sorted(graph.state_dict()) == ["conv.bias", "conv.weight", "head.fc.bias",
                                          "head.fc.weight", "widen.bias", "widen.weight"]
    x = rng.standard_normal((2, 2, 4, 4))
    gy = rng.standard_normal((2, 2))
    graph.zero_grad()
    graph(x)
    gx = graph.backward(gy)
    gw = conv.weight.grad.copy()

    def with_weight(x, w):
        saved = conv.weight.data
        conv.weight.data = w
        try:
            return graph(x)
        finally:
            conv.weight.data = saved

    directional_check(with_weight, [x, conv.weight.data.copy()], [gx, gw], gy, rng)


def test_graph_rejects_bad_wiring():
    with pytest.raises(ValueError, match="reads \\['z'\\] before"):
        Graph([Node("a", nn.ReLU(), ["z"], "y")], "x", "y")
    with pytest.raises(ValueError, match="no node computes the output 'q'"):
        Graph([Node("a", nn.ReLU(), ["x"], "y")], "x", "q")
    with pytest.raises(ValueError, match="two modules named 'a'"):
        Graph([Node("a", nn.ReLU(), ["x"], "y"), Node("a", nn.ReLU(), ["y"], "z")], "x", "z")


# -- hand-built ONNX graphs -------------------------------------------------
def _model(nodes, initializers, in_shape, out_shape, opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(np.asarray(v, dtype=np.float32)
                                             if np.asarray(v).dtype.kind == "f"
                                             else np.asarray(v), k)
                     for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_matmul_then_add_is_one_linear_and_gemm_options(rng):
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    w2 = rng.standard_normal((2, 3)).astype(np.float32)
    c = rng.standard_normal((1, 2)).astype(np.float32)
    proto = _model([helper.make_node("MatMul", ["x", "W"], ["m"]),
                    helper.make_node("Add", ["B", "m"], ["h"]),
                    helper.make_node("Gemm", ["h", "W2", "C"], ["y"], transB=1, alpha=0.5,
                                     beta=2.0)],
                   {"W": w, "B": b, "W2": w2, "C": c}, ["n", 4], ["n", 2])
    model = load(proto)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 and len(model.nodes) == 2
    x = rng.standard_normal((3, 4)).astype(np.float32)
    expected = 0.5 * (x @ w + b) @ w2.T + 2.0 * c
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)


def test_identity_dropout_constant_clip_flatten_reshape(rng):
    proto = _model([helper.make_node("Constant", [], ["lo"], value=numpy_helper.from_array(
                        np.array(0, np.float32))),
                    helper.make_node("Identity", ["x"], ["i"]),
                    helper.make_node("Dropout", ["i", "ratio"], ["d"]),
                    helper.make_node("Clip", ["d", "lo", "hi"], ["r6"]),
                    helper.make_node("Reshape", ["r6", "shape"], ["r"]),
                    helper.make_node("Flatten", ["r"], ["y"])],
                   {"hi": np.array(6.0), "shape": np.array([0, 2, -1], np.int64),
                    "ratio": np.array(0.25)},
                   ["n", 4, 3, 2], ["n", 24])
    model = load(proto)
    assert [type(n.module).__name__ for n in model.nodes] == [
        "Dropout", "ReLU6", "Reshape", "Flatten"]
    assert model.nodes[0].module.p == 0.25
    x = 5 * rng.standard_normal((40, 4, 3, 2)).astype(np.float32)
    expected = np.clip(x, 0, 6).reshape(40, 24)
    np.testing.assert_array_equal(model.eval()(x), expected)
    # training mode: a quarter of the entries dropped, the rest scaled by 4/3
    # (before the clip); seen where x > 0, which the clip keeps non-zero
    model.nodes[0].module.rng = np.random.default_rng(0)   # a repeatable draw
    y = model.train()(x).reshape(x.shape)
    positive = x > 0
    kept = positive & (y != 0)
    np.testing.assert_allclose(y[kept], np.clip(x / 0.75, 0, 6)[kept], rtol=1e-6)
    assert 0.2 < 1 - kept.sum() / positive.sum() < 0.3


def test_attributes_map_to_torch_conventions():
    proto = _model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                     epsilon=1e-3, momentum=0.8)],
                   {"s": np.ones(2), "b": np.zeros(2), "m": np.zeros(2), "v": np.ones(2)},
                   ["n", 2], ["n", 2])
    bn = load(proto).nodes[0].module
    assert type(bn) is nn.BatchNorm1d
    assert (bn.eps, bn.momentum) == (1e-3, 0.2)
    proto = _model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                     pads=[1, 1, 1, 1])], {}, [1, 1, 4, 4], [1, 1, 4, 4])
    pool = load(proto).nodes[0].module
    # ONNX's defaults: stride 1 and padding excluded from the average
    assert (pool.stride, pool.count_include_pad) == ((1, 1), False)


def test_unsupported_operators_are_all_listed():
    proto = _model([helper.make_node("Sin", ["x"], ["a"]),
                    helper.make_node("Softsign", ["a"], ["b"]),
                    helper.make_node("Relu", ["b"], ["c"]),
                    helper.make_node("Sin", ["c"], ["y"])], {}, [1, 3], [1, 3])
    with pytest.raises(ValueError, match="unsupported ONNX operators: Sin, Softsign \\("):
        load(proto)
    proto.graph.node[2].domain = "com.microsoft"
    with pytest.raises(ValueError, match="operators: Sin, Softsign, com.microsoft:Relu \\("):
        load(proto)


@pytest.mark.parametrize("node, inits, fragment", [
    (helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 0, 1, 1]),
     {"w": np.ones((1, 1, 2, 2))}, "pads \\[0, 0, 1, 1\\] are not symmetric"),
    (helper.make_node("Conv", ["x", "x"], ["y"]), {}, "weight \\('x'\\) must be a constant"),
    (helper.make_node("Clip", ["x", "lo", "hi"], ["y"]), {"lo": np.array(-1.0),
                                                          "hi": np.array(1.0)},
     "Clip\\(0, 6\\)"),
    (helper.make_node("Sub", ["c", "x"], ["y"]), {"c": np.ones(4)},
     "Sub of a tensor from a constant"),
    (helper.make_node("Div", ["x", "x"], ["y"]), {}, "Div of two tensors"),
    (helper.make_node("Slice", ["x", "s", "e"], ["y"]), {"s": np.zeros(1, np.int64),
                                                         "e": np.ones(1, np.int64)},
     "only a slice of a Shape"),
    (helper.make_node("Transpose", ["x"], ["y"]), {}, "a perm is needed"),
    (helper.make_node("Flatten", ["x"], ["y"], axis=2), {}, "axis=2"),
    (helper.make_node("Dropout", ["x"], ["y", "mask"]), {}, "mask output"),
    (helper.make_node("Cast", ["x"], ["y"], to=1), {}, "input \\('x'\\) must be a constant"),
    (helper.make_node("MatMul", ["a", "x"], ["y"]), {"a": np.ones((4, 4))},
     "data input \\('a'\\) is a constant"),
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2, 2]), {}, "2-D windows"),
])
def test_unconvertible_node_forms(node, inits, fragment):
    with pytest.raises(ValueError, match=fragment):
        load(_model([node], inits, [1, 1, 4, 4], [1, 1, 4, 4]))


def test_sources_and_bad_arguments(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    proto = export(model, (1, 1, 4, 4), tmp_path / "m.onnx")
    x = np.ones((1, 1, 4, 4), np.float32)
    expected = model(x)
    for source in (proto, proto.SerializeToString(), tmp_path / "m.onnx",
                   str(tmp_path / "m.onnx")):
        np.testing.assert_allclose(load(source)(x), expected, rtol=1e-6)
    as64 = load(proto, dtype=np.float64)
    assert as64(x.astype(np.float64)).dtype == np.float64
    with pytest.raises(TypeError, match="path_or_model must be"):
        load(3)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        load(proto, dtype=np.int8)
    two_inputs = _model([helper.make_node("Add", ["x", "z"], ["y"])], {}, [1, 2], [1, 2])
    two_inputs.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2]))
    with pytest.raises(ValueError, match="one input and one output"):
        load(two_inputs)
