"""Sequential, Residual and Concat: indexing and keys, gradient routing
against a hand computation, and finite-difference checks through whole
small networks (float64)."""
import copy

import numpy as np
import pytest

from convcore import nn
from nn_helpers import check_module_gradients
from nn_helpers import one_kernel_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


F64 = np.float64


def conv(cin, cout, k, rng_seed, **kw):
    return nn.Conv2d(cin, cout, k, dtype=F64, rng=rng_seed, **kw)


def test_sequential_indexing_slicing_nesting():
    net = nn.Sequential(conv(3, 4, 3, 0), nn.Identity(),
                        nn.Sequential(conv(4, 4, 1, 1), nn.Identity()), nn.Flatten())
    assert len(net) == 4 and isinstance(net[-1], nn.Flatten)
    assert list(net) == [net[0], net[1], net[2], net[3]]
    tail = net[1:3]
    assert isinstance(tail, nn.Sequential) and len(tail) == 2 and tail[1] is net[2]
    assert list(tail.state_dict()) == ["2.0.weight", "2.0.bias"]  # names kept, as torch
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.0.weight", "2.0.bias"]
    net.append(nn.Identity())
    assert len(net) == 5
    with pytest.raises(IndexError, match="index 9 out of range for 5 layers"):
        net[9]


def test_sequential_backward_is_reverse_chain(rng):
    a, b = conv(2, 3, 3, 0, padding=1), conv(3, 2, 1, 1)
    net = nn.Sequential(copy.deepcopy(a), copy.deepcopy(b))
    x = rng.standard_normal((2, 2, 4, 5))
    y = net(x)
    np.testing.assert_allclose(y, b(a(x)), rtol=1e-12)
    g = rng.standard_normal(y.shape)
    gx = net.backward(g)
    np.testing.assert_allclose(gx, a.backward(b.backward(g)), rtol=1e-12)
    np.testing.assert_allclose(net[0].weight.grad, a.weight.grad, rtol=1e-12)


def test_residual_identity_routes_and_sums(rng):
    body = conv(3, 3, 3, 0, padding=1)
    block = nn.Residual(copy.deepcopy(body))
    assert list(block.state_dict()) == ["body.weight", "body.bias"]
    x = rng.standard_normal((2, 3, 4, 4))
    y = block(x)
    np.testing.assert_allclose(y, body(x) + x, rtol=1e-12)
    g = rng.standard_normal(y.shape)
    # x feeds the body and the identity: its gradient is the sum of both paths.
    np.testing.assert_allclose(block.backward(g), body.backward(g) + g, rtol=1e-12)
    np.testing.assert_allclose(block.body.weight.grad, body.weight.grad, rtol=1e-12)


def test_residual_projection_routes_and_sums(rng):
    body = nn.Sequential(conv(3, 4, 3, 0, stride=2, padding=1), nn.Identity())
    short = conv(3, 4, 1, 1, stride=2, bias=False)
    block = nn.Residual(copy.deepcopy(body), copy.deepcopy(short))
    assert list(block.state_dict()) == ["body.0.weight", "body.0.bias", "shortcut.weight"]
    x = rng.standard_normal((2, 3, 5, 5))
    y = block(x)
    np.testing.assert_allclose(y, body(x) + short(x), rtol=1e-12)
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(block.backward(g), body.backward(g) + short.backward(g),
                               rtol=1e-12)
    np.testing.assert_allclose(block.shortcut.weight.grad, short.weight.grad, rtol=1e-12)


def test_residual_shape_mismatch_is_explained(rng):
    block = nn.Residual(conv(3, 4, 1, 0))
    with pytest.raises(ValueError, match="give a projection shortcut"):
        block(rng.standard_normal((1, 3, 2, 2)))


def test_concat_splits_gradient_and_sums_input_grads(rng):
    branches = [conv(3, 2, 1, 0), conv(3, 3, 3, 1, padding=1), nn.Identity()]
    block = nn.Concat(*copy.deepcopy(branches))
    assert list(block.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    x = rng.standard_normal((2, 3, 4, 5))
    y = block(x)
    assert y.shape == (2, 8, 4, 5)
    np.testing.assert_allclose(y, np.concatenate([b(x) for b in branches], axis=1), rtol=1e-12)
    g = rng.standard_normal(y.shape)
    expected = (branches[0].backward(g[:, :2]) + branches[1].backward(g[:, 2:5])
                + branches[2].backward(g[:, 5:]))
    np.testing.assert_allclose(block.backward(g), expected, rtol=1e-12)
    np.testing.assert_allclose(block[1].weight.grad, branches[1].weight.grad, rtol=1e-12)


def test_concat_last_axis(rng):
    block = nn.Concat(nn.Identity(), nn.Flatten(0, 0), axis=-1)
    x = rng.standard_normal((2, 3))
    np.testing.assert_array_equal(block(x), np.concatenate([x, x], axis=-1))
    np.testing.assert_array_equal(block.backward(np.ones((2, 6))), 2 * np.ones((2, 3)))


def test_gradcheck_conv_only_inception_with_residual(rng):
    """Nesting without any op but conv: a Residual around a Concat."""
    inception = nn.Concat(conv(4, 1, 1, 0), conv(4, 2, 3, 1, padding=1),
                          conv(4, 1, 5, 2, padding=2))
    net = nn.Sequential(conv(2, 4, 3, 3, padding=1), nn.Residual(inception), nn.Flatten())
    check_module_gradients(net, rng.standard_normal((2, 2, 5, 5)), rng)


def test_gradcheck_conv_bn_relu_pool_stack(rng):
    net = nn.Sequential(conv(2, 3, 3, 0, padding=1, bias=False), nn.BatchNorm2d(3, dtype=F64),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(3 * 2 * 3, 4, dtype=F64, rng=5))
    check_module_gradients(net, rng.standard_normal((3, 2, 4, 6)), rng, rtol=1e-5)


def test_gradcheck_residual_block_with_projection(rng):
    body = nn.Sequential(conv(3, 4, 3, 0, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(4, dtype=F64), nn.ReLU(),
                         conv(4, 4, 3, 1, padding=1, bias=False), nn.BatchNorm2d(4, dtype=F64))
    short = nn.Sequential(conv(3, 4, 1, 2, stride=2, bias=False), nn.BatchNorm2d(4, dtype=F64))
    net = nn.Sequential(nn.Residual(body, short), nn.ReLU())
    check_module_gradients(net, rng.standard_normal((2, 3, 5, 5)), rng, rtol=1e-5)


def test_gradcheck_inception_block(rng):
    block = nn.Concat(
        nn.Sequential(conv(3, 2, 1, 0), nn.ReLU()),
        nn.Sequential(conv(3, 2, 1, 1), nn.ReLU(), conv(2, 3, 3, 2, padding=1), nn.ReLU()),
        nn.Sequential(conv(3, 1, 1, 3), nn.ReLU(), conv(1, 2, 5, 4, padding=2), nn.ReLU()),
        nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv(3, 2, 1, 5), nn.ReLU()))
    y, _ = check_module_gradients(block, rng.standard_normal((2, 3, 5, 4)), rng, rtol=1e-5)
    assert y.shape == (2, 9, 5, 4)


def test_eval_mode_backward_works(rng):
    net = nn.Sequential(conv(2, 3, 3, 0), nn.BatchNorm2d(3, dtype=F64), nn.Flatten(),
                        nn.Dropout(0.5))
    net.eval()
    check_module_gradients(net, rng.standard_normal((2, 2, 4, 4)), rng)
