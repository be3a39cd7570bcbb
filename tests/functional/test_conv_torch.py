"""Peer check against torch.nn.functional.conv2d and its autograd
gradients over the same seeded grid (skipped when torch is absent)."""
import numpy as np
import pytest

from convcore import F
from convcore.algorithms import supported_algorithms
from convcore.functional._conv_spec import conv_spec
from test_conv_grid import CONFIGS, _arrays, _geom, _id

torch = pytest.importorskip("torch")


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("cfg", CONFIGS[::3], ids=_id)
def test_matches_torch(cfg):
    x, w, b = _arrays(cfg, np.float64, seed=3)
    geom = _geom(cfg)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, **geom)
    gy = np.random.default_rng(4).standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    algos = supported_algorithms(conv_spec(x.shape, w.shape, x.dtype, **geom))
    assert {"direct", "im2col", "auto"} <= set(algos)
    for algo in algos:
        y = F.conv2d(x, w, b, algorithm=algo, **geom)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
        gx, gw, gb = F.conv2d_backward(gy, x, w, algorithm=algo, **geom)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-10, atol=1e-10)
