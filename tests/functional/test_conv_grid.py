"""Every algorithm against the float64 reference, and against each other,
over a seeded grid of stride/padding/dilation/groups, plus the odd sizes
(1x1 images, batch 1, kernel equal to the padded input); every third grid
point against torch.nn.functional.conv2d and its autograd gradients when
torch is installed."""
import numpy as np
import pytest

import convcore
from convcore import F
from convcore.algorithms import supported_algorithms
from convcore.functional._conv_spec import conv_spec
from ref_conv import conv2d_backward_ref, conv2d_ref, resolve_padding

ALGORITHMS = convcore.conv_algorithms()  # includes "auto"
# Algorithms that support only some configurations and must say so.
SPECIALISED = {"winograd"}
TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-4)}


def _fits(H, W, R, S, padding, dilation, stride):
    (pt, pb), (pl, pr) = resolve_padding(padding, (R, S), (dilation, dilation))
    return (H + pt + pb >= dilation * (R - 1) + 1
            and W + pl + pr >= dilation * (S - 1) + 1)


def _random_configs(count, seed):
    """Valid configurations drawn from the ranges the issue names."""
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        groups = int(rng.choice([1, 1, 2, 3, 4]))
        depthwise = rng.random() < 0.2
        cg = 1 if depthwise else int(rng.integers(1, 5))
        C = groups * cg
        K = groups * (1 if depthwise and rng.random() < 0.5 else int(rng.integers(1, 5)))
        if C > 16 or K > 16:
            continue
        R, S = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        H, W = int(rng.integers(1, 21)), int(rng.integers(1, 21))
        stride = int(rng.integers(1, 4))
        dilation = int(rng.integers(1, 4))
        padding = rng.choice(["int", "int", "int", "same", "valid"])
        padding = int(rng.integers(0, 4)) if padding == "int" else str(padding)
        if padding == "same" and stride != 1:
            continue
        if not _fits(H, W, R, S, padding, dilation, stride):
            continue
        N = int(rng.integers(1, 5))
        configs.append(dict(N=N, C=C, K=K, H=H, W=W, R=R, S=S, stride=stride,
                            padding=padding, dilation=dilation, groups=groups))
    return configs


EDGE_CASES = [
    dict(N=1, C=1, K=1, H=1, W=1, R=1, S=1, stride=1, padding=0, dilation=1, groups=1),   # 1x1 image
    dict(N=1, C=3, K=2, H=1, W=1, R=3, S=3, stride=1, padding=1, dilation=1, groups=1),   # 1x1 image, padded
    dict(N=2, C=4, K=5, H=5, W=7, R=5, S=7, stride=1, padding=0, dilation=1, groups=1),   # kernel == input
    dict(N=2, C=2, K=3, H=3, W=3, R=5, S=5, stride=2, padding=1, dilation=1, groups=1),   # kernel == padded input
    dict(N=1, C=2, K=2, H=5, W=5, R=3, S=3, stride=1, padding=2, dilation=3, groups=2),   # dilated kernel == padded input
    dict(N=3, C=8, K=8, H=9, W=6, R=3, S=3, stride=1, padding=1, dilation=1, groups=8),   # depthwise
    dict(N=2, C=4, K=12, H=6, W=6, R=3, S=3, stride=2, padding=1, dilation=1, groups=4),  # depthwise multiplier 3
    dict(N=2, C=16, K=8, H=7, W=5, R=1, S=1, stride=1, padding=0, dilation=1, groups=1),  # 1x1: pointwise GEMM
    dict(N=2, C=6, K=4, H=7, W=5, R=1, S=1, stride=2, padding=0, dilation=1, groups=2),   # 1x1 strided
    dict(N=2, C=3, K=4, H=6, W=6, R=1, S=1, stride=1, padding=1, dilation=2, groups=1),   # 1x1 padded
    dict(N=2, C=3, K=4, H=8, W=7, R=2, S=4, stride=1, padding="same", dilation=1, groups=1),  # odd 'same' total
    dict(N=2, C=3, K=4, H=8, W=7, R=4, S=3, stride=1, padding="same", dilation=3, groups=1),
    dict(N=1, C=3, K=2, H=20, W=3, R=7, S=1, stride=3, padding=(3, 0), dilation=(1, 2), groups=1),
    dict(N=4, C=2, K=2, H=4, W=19, R=2, S=6, stride=(1, 3), padding=(0, 2), dilation=(2, 1), groups=1),
    # 3x3 stride 1: Winograd's domain, odd sizes (partial tiles), 1x1 images
    dict(N=3, C=5, K=7, H=9, W=13, R=3, S=3, stride=1, padding=1, dilation=1, groups=1),
    dict(N=2, C=4, K=4, H=1, W=1, R=3, S=3, stride=1, padding=1, dilation=1, groups=1),
    dict(N=2, C=6, K=6, H=5, W=4, R=3, S=3, stride=1, padding=(2, 0), dilation=1, groups=3),
    dict(N=1, C=3, K=2, H=3, W=3, R=3, S=3, stride=1, padding="valid", dilation=1, groups=1),
    dict(N=2, C=8, K=8, H=4, W=200, R=3, S=3, stride=1, padding="same", dilation=1, groups=8),
    dict(N=40, C=2, K=3, H=6, W=6, R=3, S=3, stride=1, padding=1, dilation=1, groups=1),
]

CONFIGS = _random_configs(320, seed=7) + EDGE_CASES


def _arrays(cfg, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(dtype)
    w = rng.standard_normal((cfg["K"], cfg["C"] // cfg["groups"], cfg["R"], cfg["S"])).astype(dtype)
    b = rng.standard_normal(cfg["K"]).astype(dtype)
    return x, w, b


def _geom(cfg):
    return {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}


def _id(cfg):
    return ("N{N}C{C}K{K}_{H}x{W}_k{R}x{S}_s{stride}_p{padding}_d{dilation}_g{groups}"
            .format(**cfg).replace(" ", ""))


def _check(cfg, dtype, seed):
    x, w, b = _arrays(cfg, dtype, seed)
    geom = _geom(cfg)
    y_ref = conv2d_ref(x, w, b, **geom)
    gy = np.random.default_rng(seed + 1).standard_normal(y_ref.shape).astype(dtype)
    gx_ref, gw_ref, gb_ref = conv2d_backward_ref(gy, x, w, **geom)
    scale = lambda ref: dict(TOL[dtype], atol=TOL[dtype]["atol"] * max(1.0, np.abs(ref).max()))
    ran = []
    for algo in ALGORITHMS:
        try:
            y = F.conv2d(x, w, b, algorithm=algo, **geom)
        except ValueError as e:
            assert algo in SPECIALISED and "does not support this configuration" in str(e), e
            with pytest.raises(ValueError, match="does not support"):
                F.conv2d_backward(gy, x, w, algorithm=algo, **geom)
            continue
        ran.append(algo)
        assert y.dtype == dtype and y.shape == y_ref.shape
        np.testing.assert_allclose(y, y_ref, **scale(y_ref), err_msg=f"{algo} forward")
        gx, gw, gb = F.conv2d_backward(gy, x, w, algorithm=algo, **geom)
        assert gx.dtype == gw.dtype == gb.dtype == dtype
        np.testing.assert_allclose(gx, gx_ref, **scale(gx_ref), err_msg=f"{algo} grad_x")
        np.testing.assert_allclose(gw, gw_ref, **scale(gw_ref), err_msg=f"{algo} grad_w")
        np.testing.assert_allclose(gb, gb_ref, **scale(gb_ref), err_msg=f"{algo} grad_b")
    return ran


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_float64_matches_reference(cfg):
    _check(cfg, np.float64, seed=hash(_id(cfg)) % 2**32)


@pytest.mark.parametrize("cfg", CONFIGS[::4] + EDGE_CASES, ids=_id)
def test_float32_matches_reference(cfg):
    _check(cfg, np.float32, seed=len(_id(cfg)))


def test_specialised_algorithms_run_where_they_apply():
    """Winograd must accept every 3x3 stride-1 configuration, whatever the
    padding and dilation (so the grid above really tests it)."""
    applicable = [c for c in CONFIGS if (c["R"], c["S"]) == (3, 3) and c["stride"] == 1]
    assert len(applicable) >= 10
    assert {c["dilation"] for c in applicable} >= {1, 2, 3}
    assert {c["padding"] for c in applicable} >= {0, 3, "same"}
    for cfg in applicable:
        assert "winograd" in _check(cfg, np.float64, seed=1)


def test_grid_covers_the_issue_ranges():
    """The random grid really spans what it claims (a guard on the generator)."""
    assert len(CONFIGS) >= 300
    assert {c["stride"] for c in CONFIGS} >= {1, 2, 3}
    assert {c["dilation"] for c in CONFIGS} >= {1, 2, 3}
    assert {c["padding"] for c in CONFIGS} >= {0, 1, 2, 3, "same", "valid"}
    assert any(c["groups"] > 1 and c["C"] == c["groups"] for c in CONFIGS)
    assert any(c["H"] == 1 and c["W"] == 1 for c in CONFIGS)
    assert any(c["N"] == 1 for c in CONFIGS)


def test_bias_none_and_backward_without_bias(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    gy = rng.standard_normal((2, 4, 4, 4))
    for algo in ALGORITHMS:
        np.testing.assert_allclose(F.conv2d(x, w, algorithm=algo), conv2d_ref(x, w), rtol=1e-12, atol=1e-12)
        gx, gw, gb = F.conv2d_backward(gy, x, w, algorithm=algo, bias=False)
        assert gb is None
        gx_only = F.conv2d_backward(gy, x, w, algorithm=algo, weight_grad=False)
        gw_only = F.conv2d_backward(gy, x, w, algorithm=algo, input_grad=False)
        assert gx_only[1] is None and gw_only[0] is None
        np.testing.assert_array_equal(gx_only[0], gx)
        np.testing.assert_array_equal(gw_only[1], gw)


def test_empty_batch(rng):
    x = np.zeros((0, 3, 5, 5))
    w = rng.standard_normal((2, 3, 3, 3))
    for algo in ALGORITHMS:
        assert F.conv2d(x, w, algorithm=algo).shape == (0, 2, 3, 3)
        gx, gw, gb = F.conv2d_backward(np.zeros((0, 2, 3, 3)), x, w, algorithm=algo)
        assert gx.shape == x.shape
        np.testing.assert_array_equal(gw, 0)
        np.testing.assert_array_equal(gb, 0)


def test_large_batch_exercises_weight_grad_partials(rng):
    """N > the 8 fixed weight-gradient chunks, uneven split."""
    x = rng.standard_normal((19, 4, 7, 7))
    w = rng.standard_normal((6, 2, 3, 3))
    gy = rng.standard_normal((19, 6, 5, 5))
    gx_r, gw_r, gb_r = conv2d_backward_ref(gy, x, w, groups=2)
    for algo in ALGORITHMS:
        gx, gw, gb = F.conv2d_backward(gy, x, w, groups=2, algorithm=algo)
        np.testing.assert_allclose(gx, gx_r, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gw, gw_r, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gb, gb_r, rtol=1e-10, atol=1e-10)


# --- PyTorch as a peer: torch.nn.functional.conv2d and autograd on the grid (skipped without torch) ---

@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("cfg", CONFIGS[::3], ids=_id)
def test_matches_torch(cfg):
    torch = pytest.importorskip("torch")
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
