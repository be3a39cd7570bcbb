"""Every zoo network exported to ONNX, checked by onnx.checker, run by
onnxruntime and compared with convcore's eval-mode forward. Small input
sizes (each builder's smallest practical one) keep the suite quick."""
import numpy as np
import pytest

import convcore
from convcore import models, nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from convcore.onnx import export  # noqa: E402

SMALL = {"num_classes": 7, "rng": 0}
# name -> (builder kwargs, input shape); VGG and AlexNet with narrow hidden
# layers (their convolutions are as published)
ZOO = {
    "lenet5": ({}, (2, 1, 32, 32)),
    "lenet_digits": ({}, (2, 1, 8, 8)),
    "alexnet": ({"input_size": 67, "hidden": 32}, (2, 3, 67, 67)),
    "alexnet_two_towers": ({"input_size": 67, "hidden": 32, "towers": 2}, (2, 3, 67, 67)),
    **{name: ({"input_size": 32, "hidden": 32}, (2, 3, 32, 32)) for name in (
        "vgg11", "vgg11_bn", "vgg11_lrn", "vgg13", "vgg13_bn", "vgg16_c", "vgg16_c_bn",
        "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")},
    "vgg11_pooled": ({"input_size": 64, "hidden": 32}, (2, 3, 64, 64)),
    "googlenet": ({"input_size": 64}, (2, 3, 64, 64)),
    "resnet18": ({"input_size": 32}, (2, 3, 32, 32)),
    "resnet34": ({"input_size": 32}, (2, 3, 32, 32)),
    "resnet50": ({"input_size": 32}, (2, 3, 32, 32)),
    "resnet20": ({"input_size": 32}, (2, 3, 32, 32)),
    "mobilenet_v1": ({"input_size": 32}, (2, 3, 32, 32)),
    "mobilenet_v2": ({"input_size": 32}, (2, 3, 32, 32)),
    # torchvision's: AlexNet's adaptive pool averages uneven windows on 63x63
    "alexnet_torchvision": ({"input_size": 63}, (2, 3, 63, 63)),
    "googlenet_torchvision": ({"input_size": 32}, (2, 3, 32, 32)),
    "googlenet_torchvision_transform_input": ({"input_size": 32, "transform_input": True},
                                              (2, 3, 32, 32)),
}
_BUILDER = {"alexnet_two_towers": "alexnet", "vgg11_pooled": "vgg11",
            "googlenet_torchvision_transform_input": "googlenet_torchvision"}


@pytest.fixture(autouse=True)
def one_thread():
    previous = convcore.set_num_threads(1)
    yield
    convcore.set_num_threads(previous)


def _session(proto):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _run_both(model, proto, x):
    model.eval()
    with convcore.no_grad():
        expected = model(x)
    got = _session(proto).run(None, {"input": x})[0]
    return got, expected


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_runs_in_onnxruntime_as_in_convcore(name, rng, tmp_path):
    kwargs, shape = ZOO[name]
    model = models.get_model(_BUILDER.get(name, name), **SMALL, **kwargs)
    for m in model.modules():
        # running statistics as after training, so a mix-up of them shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = rng.uniform(-0.2, 0.2, m.num_features).astype(np.float32)
            m.running_var = rng.uniform(0.5, 1.5, m.num_features).astype(np.float32)
            m.bump_buffers()
    model.train()   # export writes the eval network and leaves the flags alone
    path = tmp_path / f"{name}.onnx"
    proto = export(model, shape, path)
    assert all(m.training for m in model.modules())
    onnx.checker.check_model(str(path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # every parameter and running statistic is an initializer, by its key
    names = {t.name for t in proto.graph.initializer}
    assert {k for k in model.state_dict() if not k.endswith("num_batches_tracked")} <= names
    # a batch of another size than the exported shape: the batch is dynamic
    x = rng.standard_normal((3,) + shape[1:]).astype(np.float32)
    got, expected = _run_both(model, onnx.load(str(path)), x)
    diff = float(np.abs(got - expected).max())
    print(f"{name}: max |onnxruntime - convcore| = {diff:.3g} "
          f"(outputs up to {np.abs(expected).max():.3g})")
    assert got.shape == expected.shape == (3, 7)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
