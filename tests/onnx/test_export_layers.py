"""Each supported layer (and its options) exported alone or in a small
network and run by onnxruntime against convcore's eval forward; the
errors for what cannot be exported; the optional onnx dependency."""

import numpy as np
import pytest

import convcore
from convcore import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from convcore.onnx import export  # noqa: E402
from subprocess_helpers import run_python  # noqa: E402


def _randomize(model, rng):
    """Non-trivial weights and running statistics everywhere."""
    for p in model.parameters():
        p.data = rng.uniform(-0.5, 0.5, p.data.shape).astype(p.data.dtype)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) and m.running_mean is not None:
            m.running_mean = rng.uniform(-0.5, 0.5, m.num_features).astype(m.running_mean.dtype)
            m.running_var = rng.uniform(0.5, 2.0, m.num_features).astype(m.running_var.dtype)
            m.bump_buffers()
    return model


def _onnxruntime(proto, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _check(model, shape, rng, dtype=np.float32, **kwargs):
    model = _randomize(model, rng)
    proto = export(model, shape, dtype=dtype, **kwargs)
    x = rng.standard_normal((2,) + tuple(shape[1:])).astype(dtype)
    x_before = x.copy()
    model.eval()
    with convcore.no_grad():
        expected = model(x)
    got = _onnxruntime(proto, x)
    np.testing.assert_array_equal(x, x_before)
    assert got.shape == expected.shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * max(1, np.abs(expected).max()))
    return proto


def _ops(proto):
    return [n.op_type for n in proto.graph.node]


LAYERS = {
    "conv_groups_dilation": (lambda: nn.Conv2d(6, 4, 3, stride=2, padding=(2, 1), dilation=2,
                                               groups=2), (1, 6, 9, 8)),
    "conv_same_even_kernel": (lambda: nn.Conv2d(3, 4, (4, 3), padding="same", bias=False),
                              (1, 3, 7, 6)),
    "conv_valid_1x1_input": (lambda: nn.Conv2d(3, 5, 1, padding="valid"), (1, 3, 1, 1)),
    "depthwise": (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), (1, 4, 5, 5)),
    "linear": (lambda: nn.Linear(6, 3), (1, 6)),
    "linear_no_bias_on_4d": (lambda: nn.Linear(5, 3, bias=False), (1, 2, 4, 5)),
    "linear_on_4d": (lambda: nn.Linear(5, 3), (1, 2, 4, 5)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3, eps=1e-3), (1, 3, 4, 5)),
    "batchnorm2d_no_affine": (lambda: nn.BatchNorm2d(3, affine=False), (1, 3, 4, 5)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(6), (1, 6)),
    "relu": (lambda: nn.ReLU(), (1, 3, 4, 4)),
    "relu6": (lambda: nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU6()), (1, 2, 3, 3)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.2), (1, 3, 4, 4)),
    "sigmoid": (lambda: nn.Sigmoid(), (1, 3, 4, 4)),
    "tanh": (lambda: nn.Tanh(), (1, 3, 4, 4)),
    "softplus": (lambda: nn.Softplus(), (1, 3, 4, 4)),
    "softplus_beta": (lambda: nn.Softplus(beta=2.5), (1, 3, 4, 4)),
    "maxpool_ceil_padding": (lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (1, 2, 8, 7)),
    "maxpool_dilation": (lambda: nn.MaxPool2d(2, dilation=2), (1, 2, 7, 7)),
    "avgpool_exclude_pad": (lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True,
                                                 count_include_pad=False), (1, 2, 8, 7)),
    "avgpool": (lambda: nn.AvgPool2d((2, 3)), (1, 2, 6, 6)),
    "adaptive_global": (lambda: nn.AdaptiveAvgPool2d(1), (1, 3, 5, 7)),
    "adaptive_divisible": (lambda: nn.AdaptiveAvgPool2d((2, 5)), (1, 3, 4, 5)),
    "adaptive_uneven": (lambda: nn.AdaptiveAvgPool2d((3, 2)), (1, 3, 7, 5)),
    "adaptive_upsampling": (lambda: nn.AdaptiveAvgPool2d((5, 7)), (1, 3, 2, 3)),
    "adaptive_keep_height": (lambda: nn.AdaptiveAvgPool2d((None, 2)), (1, 3, 3, 6)),
    "lrn": (lambda: nn.LocalResponseNorm(3, alpha=0.1, beta=0.6, k=2.0), (1, 6, 3, 3)),
    "dropout_identity": (lambda: nn.Sequential(nn.Dropout(0.5), nn.Identity(), nn.ReLU()),
                         (1, 3, 2, 2)),
    "flatten": (lambda: nn.Flatten(), (1, 2, 3, 4)),
    "flatten_middle": (lambda: nn.Flatten(1, 2), (1, 2, 3, 4)),
    "group_norm": (lambda: nn.GroupNorm(3, 6), (1, 6, 3, 4)),
    "group_norm_no_affine": (lambda: nn.GroupNorm(2, 6, affine=False), (1, 6, 3, 4)),
    "layer_norm": (lambda: nn.LayerNorm((4, 5)), (1, 3, 4, 5)),
    "residual_projection": (lambda: nn.Residual(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
        nn.Conv2d(3, 4, 1)), (1, 3, 5, 5)),
    "residual_identity": (lambda: nn.Residual(nn.Conv2d(3, 3, 3, padding=1)), (1, 3, 5, 5)),
    "concat": (lambda: nn.Concat(nn.Conv2d(3, 2, 1), nn.Sequential(nn.MaxPool2d(3, 1, 1)),
                                 nn.Identity()), (1, 3, 4, 4)),
    "identity_model": (lambda: nn.Identity(), (1, 3)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_onnxruntime(name, rng):
    build, shape = LAYERS[name]
    _check(build(), shape, rng)


def test_float64_export_and_run(rng):
    # (onnxruntime's CPU Conv has no float64 kernel: a network without one)
    model = nn.Sequential(nn.Linear(5, 4, dtype=np.float64), nn.Tanh(),
                          nn.Linear(4, 2, dtype=np.float64))
    proto = _check(model, (1, 5), rng, dtype=np.float64)
    assert {t.data_type for t in proto.graph.initializer} == {onnx.TensorProto.DOUBLE}


def test_float32_model_as_a_float64_graph(rng):
    model = nn.Sequential(nn.Linear(5, 4), nn.Sigmoid())
    proto = export(model, (1, 5), dtype=np.float64)
    assert {t.data_type for t in proto.graph.initializer} == {onnx.TensorProto.DOUBLE}
    x = rng.standard_normal((3, 5))
    with convcore.no_grad():
        expected = model.eval()(x.astype(np.float32))
    np.testing.assert_allclose(_onnxruntime(proto, x), expected, rtol=1e-6, atol=1e-6)


def test_the_nodes_written(rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU6(), nn.Dropout(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    proto = _check(model, (1, 1, 5, 5), rng)
    assert _ops(proto) == ["Conv", "BatchNormalization", "Clip", "GlobalAveragePool",
                           "Flatten", "Gemm"]
    assert proto.graph.output[0].name == "output"
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param, dims[1].dim_value) == ("batch", 3)


def test_file_written_and_model_unchanged(rng, tmp_path):
    model = _randomize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), rng)
    before = model.state_dict()
    path = tmp_path / "m.onnx"
    proto = export(model, (4, 1, 5, 5), str(path), opset=13)
    assert onnx.load(str(path)) == proto
    assert proto.opset_import[0].version == 13
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert model.training and model[1].training


class Custom(nn.Module):
    def forward(self, x):
        return x


class FancyReLU(nn.ReLU):
    """A subclass may compute something else: not exported as ReLU."""


@pytest.mark.parametrize("model, fragment", [
    (nn.Sequential(nn.Conv2d(1, 1, 1), nn.Residual(nn.Sequential(nn.ReLU(), Custom()))),
     "cannot export Custom at '1.body.1'"),
    (nn.Sequential(FancyReLU()), "cannot export FancyReLU at '0'"),
    (Custom(), "cannot export Custom at the top level"),
    (nn.Sequential(nn.LocalResponseNorm(4)), "LocalResponseNorm at '0'.*even size"),
    (nn.Sequential(nn.BatchNorm2d(1, track_running_stats=False)),
     "BatchNorm2d at '0'.*track_running_stats"),
])
def test_unsupported_layer_is_named_with_its_path(model, fragment):
    with pytest.raises(ValueError, match=fragment):
        export(model, (1, 1, 3, 3))


@pytest.mark.parametrize("kwargs, exc, fragment", [
    ({"dtype": np.int32}, TypeError, "dtype must be float32 or float64"),
    ({"opset": 11}, ValueError, "opset must be >= 13"),
    ({"input_shape": (3,)}, ValueError, "input_shape"),
    ({"input_shape": (1, 0, 3)}, ValueError, "input_shape"),
    ({"model": np.zeros(3)}, TypeError, "model must be a convcore nn.Module, got ndarray"),
])
def test_bad_arguments(kwargs, exc, fragment):
    kwargs = {"model": nn.ReLU(), "input_shape": (1, 2, 3, 3), **kwargs}
    with pytest.raises(exc, match=fragment):
        export(**kwargs)


def test_layer_norm_needs_opset_17():
    with pytest.raises(ValueError, match="'0'.*opset >= 17"):
        export(nn.Sequential(nn.LayerNorm(3)), (1, 3), opset=16)


def test_import_without_onnx_and_the_install_hint():
    code = ("import sys; sys.modules['onnx'] = None\n"
            "import convcore.onnx, convcore.nn as nn\n"
            "for call in (lambda: convcore.onnx.export(nn.ReLU(), (1, 2)),\n"
            "             lambda: convcore.onnx.load('m.onnx')):\n"
            "    try:\n"
            "        call()\n"
            "    except ImportError as e:\n"
            "        print(e)\n")
    done = run_python("-c", code)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count('convcore.onnx needs the onnx package: pip install "convcore[onnx]"') == 2
