"""A CNN built in PyTorch, exported by torch.onnx.export (the TorchScript
exporter, dynamo=False: the default needs onnxscript), loaded here: the
same outputs, the same gradients, and one SGD step as torch's (skipped
without torch or onnx)."""
import io
import warnings

import numpy as np
import pytest

import convcore
from convcore import optim

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from convcore.onnx import export, load  # noqa: E402

T = torch.nn


class SmallNet(T.Module):
    """conv-bn-relu-pool, a residual block, a two-branch concat, ReLU6,
    global pooling, dropout and a linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = T.Conv2d(3, 8, 3, padding=1)
        self.bn1 = T.BatchNorm2d(8)
        self.pool = T.MaxPool2d(2)
        self.conv2 = T.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = T.BatchNorm2d(8)
        self.branch = T.Conv2d(8, 4, 1)
        self.down = T.AvgPool2d(3, stride=1, padding=1)
        self.drop = T.Dropout(0.3)
        self.fc = T.Linear(12, 5)

    def forward(self, x):
        y = self.pool(torch.relu(self.bn1(self.conv1(x))))
        y = torch.relu(self.bn2(self.conv2(y)) + y)
        y = torch.cat([torch.nn.functional.relu6(self.branch(y)), self.down(y)], 1)
        y = torch.nn.functional.adaptive_avg_pool2d(y, 1)
        return self.fc(self.drop(torch.flatten(y, 1)))


def _torch_net():
    torch.manual_seed(0)
    net = SmallNet()
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _export(net, fold):
    """fold=True: torch's default (batch norm folded into the convolutions);
    False keeps every layer and its PyTorch name."""
    buf = io.BytesIO()
    kwargs = {} if fold else {"training": torch.onnx.TrainingMode.PRESERVE,
                              "do_constant_folding": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, 8, 8), buf, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                          **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("fold", [True, False])
def test_torch_export_loads_and_gives_torch_outputs(fold, rng):
    net = _torch_net()
    model = load(_export(net, fold)).eval()
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)
    # and written back by convcore, onnxruntime computes torch's outputs
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(export(model, (1, 3, 8, 8)).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5,
                               atol=1e-5)


def _torch_grads(net, x, gy):
    tx = torch.from_numpy(x).requires_grad_(True)
    y = net(tx)
    y.backward(torch.from_numpy(gy))
    return (y.detach().numpy(), tx.grad.numpy(),
            {k: p.grad.numpy() for k, p in net.named_parameters()})


def test_gradients_and_an_sgd_step_match_torch(rng):
    """Training mode, batch statistics, dropout off (p is random there):
    the loaded model's keys are torch's, so gradients compare by name."""
    net = _torch_net()
    net.drop.p = 0.0
    model = load(_export(net, fold=False))
    model.train()
    net.train()
    assert sorted(k for k in model.state_dict() if "num_batches" not in k) == \
        sorted(k for k in net.state_dict() if "num_batches" not in k)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    gy = rng.standard_normal((4, 5)).astype(np.float32)
    y_t, gx_t, grads_t = _torch_grads(net, x, gy)
    y = model(x)
    gx = model.backward(gy)
    np.testing.assert_allclose(y, y_t, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gx, gx_t, rtol=1e-4, atol=1e-5)
    params = dict(model.named_parameters())
    assert params.keys() == grads_t.keys()
    for k, g in grads_t.items():
        np.testing.assert_allclose(params[k].grad, g, rtol=1e-4, atol=1e-5, err_msg=k)
    # the running statistics moved as torch's did
    for k in ("bn1.running_mean", "bn2.running_var"):
        np.testing.assert_allclose(model.state_dict()[k], net.state_dict()[k].numpy(),
                                   rtol=1e-5, atol=1e-6)
    # one fine-tuning step
    optim.SGD(model.parameters(), lr=0.1, momentum=0.9).step()
    torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9).step()
    for k, p in net.named_parameters():
        np.testing.assert_allclose(params[k].data, p.detach().numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=k)


@pytest.fixture(autouse=True)
def one_thread():
    previous = convcore.set_num_threads(1)
    yield
    convcore.set_num_threads(previous)
