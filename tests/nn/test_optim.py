"""Optimisers against their update rules written out by hand, against
torch.optim over several steps (when installed), state dicts, clipping and
learning-rate schedules."""
import math

import numpy as np
import pytest

import convcore
from convcore import nn, optim
from convcore.optim import lr_scheduler

P0 = np.array([0.5, -1.0, 2.0])
GRADS = [np.array([0.1, -0.2, 0.3]), np.array([-0.4, 0.5, 0.05]),
         np.array([0.2, 0.2, -0.1]), np.array([1.0, -0.3, 0.0])]


def run(make_opt, grads=GRADS, dtype=np.float64):
    p = nn.Parameter(P0.astype(dtype))
    opt = make_opt([p])
    for g in grads:
        p.grad = g.astype(dtype)
        opt.step()
    return p.data


# -- hand formulas -----------------------------------------------------------
def test_sgd_plain_and_weight_decay():
    expected = P0.copy()
    for g in GRADS:
        expected = expected - 0.1 * (g + 0.01 * expected)
    np.testing.assert_allclose(run(lambda ps: optim.SGD(ps, lr=0.1, weight_decay=0.01)),
                               expected, rtol=1e-14)


def test_sgd_momentum_dampening():
    p, buf = P0.copy(), None
    for g in GRADS:
        buf = g.copy() if buf is None else 0.9 * buf + (1 - 0.3) * g
        p = p - 0.05 * buf
    np.testing.assert_allclose(
        run(lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.3)), p, rtol=1e-14)


def test_sgd_nesterov():
    p, buf = P0.copy(), None
    for g in GRADS:
        g = g + 1e-2 * p
        buf = g.copy() if buf is None else 0.8 * buf + g
        p = p - 0.1 * (g + 0.8 * buf)
    np.testing.assert_allclose(
        run(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.8, nesterov=True, weight_decay=1e-2)),
        p, rtol=1e-14)


def _adam_by_hand(lr, b1, b2, eps, wd, decoupled, amsgrad):
    p, m, v, vmax = P0.copy(), 0.0, 0.0, 0.0
    for t, g in enumerate(GRADS, 1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v) if amsgrad else v
        m_hat = m / (1 - b1 ** t)          # bias corrections
        v_hat = vmax / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize("wd, amsgrad", [(0.0, False), (0.1, False), (0.0, True)])
def test_adam_bias_corrected(wd, amsgrad):
    got = run(lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.9), eps=1e-6,
                                    weight_decay=wd, amsgrad=amsgrad))
    np.testing.assert_allclose(got, _adam_by_hand(0.01, 0.8, 0.9, 1e-6, wd, False, amsgrad),
                               rtol=1e-12)


def test_adamw_decoupled_decay():
    got = run(lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.5))
    np.testing.assert_allclose(got, _adam_by_hand(0.01, 0.9, 0.999, 1e-8, 0.5, True, False),
                               rtol=1e-12)


@pytest.mark.parametrize("momentum, centered", [(0.0, False), (0.5, False), (0.5, True)])
def test_rmsprop(momentum, centered):
    lr, alpha, eps = 0.01, 0.9, 1e-8
    p, sq, gavg, buf = P0.copy(), 0.0, 0.0, 0.0
    for g in GRADS:
        sq = alpha * sq + (1 - alpha) * g * g
        if centered:
            gavg = alpha * gavg + (1 - alpha) * g
            avg = np.sqrt(sq - gavg ** 2) + eps
        else:
            avg = np.sqrt(sq) + eps
        if momentum:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
    got = run(lambda ps: optim.RMSprop(ps, lr=lr, alpha=alpha, momentum=momentum,
                                       centered=centered))
    np.testing.assert_allclose(got, p, rtol=1e-12)


def test_float32_parameters_stay_float32():
    for make in (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.Adam(ps),
                 lambda ps: optim.RMSprop(ps, centered=True)):
        out = run(make, dtype=np.float32)
        assert out.dtype == np.float32


def test_frozen_and_gradless_parameters_are_skipped():
    a, b, c = (nn.Parameter(np.ones(2)) for _ in range(3))
    b.requires_grad = False
    b.grad = np.ones(2)
    a.grad = np.ones(2)
    opt = optim.Adam([a, b, c], lr=0.1)
    opt.step()
    assert np.all(a.data < 1) and np.all(b.data == 1) and np.all(c.data == 1)
    opt.zero_grad()
    assert a.grad is None


def test_param_groups_and_state_dict_resume():
    def make(p1, p2):
        return optim.SGD([{"params": [p1]}, {"params": [p2], "lr": 0.5}], lr=0.1, momentum=0.9)
    p1, p2 = nn.Parameter(P0.copy()), nn.Parameter(P0.copy())
    opt = make(p1, p2)
    for g in GRADS[:2]:
        p1.grad, p2.grad = g.copy(), g.copy()
        opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][1]["lr"] == 0.5 and sd["param_groups"][1]["params"] == [1]
    q1, q2 = nn.Parameter(p1.data.copy()), nn.Parameter(p2.data.copy())
    opt2 = make(q1, q2)
    opt2.load_state_dict(sd)
    for g in GRADS[2:]:
        for p in (p1, p2, q1, q2):
            p.grad = g.copy()
        opt.step()
        opt2.step()
    np.testing.assert_array_equal(q1.data, p1.data)
    np.testing.assert_array_equal(q2.data, p2.data)
    assert not np.allclose(p1.data, p2.data)


def test_bad_optimizer_arguments():
    p = [nn.Parameter(np.ones(2))]
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum > 0"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="invalid lr -1"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="betas must be in"):
        optim.Adam(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(TypeError, match="expected Parameters"):
        optim.SGD([np.ones(2)], lr=0.1)


# -- clipping ----------------------------------------------------------------
def test_clip_grad_norm():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    total = optim.clip_grad_norm_([a, b], max_norm=1.0)
    assert total == pytest.approx(5.0)
    scale = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(a.grad, [3 * scale, 0])
    np.testing.assert_allclose(b.grad, [4 * scale])
    assert optim.clip_grad_norm_([a, b], max_norm=10.0) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(b.grad, [4 * scale])  # under the limit: unchanged
    a.grad = np.array([-7.0, 2.0])
    assert optim.clip_grad_norm_([a, b], 1.0, norm_type=math.inf) == pytest.approx(7.0)
    a.grad = np.array([np.nan, 1.0])
    with pytest.raises(RuntimeError, match="not finite"):
        optim.clip_grad_norm_(a, 1.0, error_if_nonfinite=True)


def test_clip_grad_value():
    a = nn.Parameter(np.zeros(3))
    a.grad = np.array([-3.0, 0.5, 2.0])
    optim.clip_grad_value_([a], 1.0)
    np.testing.assert_array_equal(a.grad, [-1.0, 0.5, 1.0])


# -- schedules ---------------------------------------------------------------
def _lrs(make_sched, epochs=12, lr=1.0):
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        sched.step()
    return out


def test_schedules_closed_forms():
    np.testing.assert_allclose(_lrs(lambda o: lr_scheduler.StepLR(o, 3, gamma=0.5)),
                               [0.5 ** (e // 3) for e in range(12)])
    np.testing.assert_allclose(_lrs(lambda o: lr_scheduler.MultiStepLR(o, [2, 5, 5], 0.1)),
                               [1, 1, .1, .1, .1, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3])
    np.testing.assert_allclose(_lrs(lambda o: lr_scheduler.ExponentialLR(o, 0.9)),
                               [0.9 ** e for e in range(12)])
    np.testing.assert_allclose(
        _lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.1)),
        [0.1 + 0.9 * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(12)], atol=1e-12)


def test_reduce_on_plateau_divides_by_ten():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    sched = lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=2)
    lrs = []
    for acc in [0.5, 0.6, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7]:
        sched.step(acc)
        lrs.append(opt.param_groups[0]["lr"])
    # three epochs without improvement (> patience 2) divide by 10
    np.testing.assert_allclose(lrs, [1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01])


# -- torch peers -------------------------------------------------------------
OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01)),
]


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS)
def test_optimizer_matches_torch(name, kwargs, rng):
    torch = pytest.importorskip("torch")
    init = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(6)]
    p = nn.Parameter(init.copy())
    tp = torch.nn.Parameter(torch.from_numpy(init.copy()))
    opt = getattr(optim, name)([p], **kwargs)
    topt = getattr(torch.optim, name)([tp], **kwargs)
    for g in grads:
        p.grad = g.copy()
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_defaults_equal_torch(name):
    torch = pytest.importorskip("torch")
    ours = getattr(optim, name)([nn.Parameter(np.zeros(1))]).defaults
    theirs = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(1))]).defaults
    for key, value in ours.items():
        assert theirs[key] == value, key


@pytest.mark.parametrize("make", [
    lambda m, o: m.StepLR(o, 4, gamma=0.3),
    lambda m, o: m.MultiStepLR(o, [3, 7], gamma=0.5),
    lambda m, o: m.ExponentialLR(o, 0.95),
    lambda m, o: m.CosineAnnealingLR(o, T_max=6, eta_min=0.01),
])
def test_schedules_match_torch(make):
    torch = pytest.importorskip("torch")
    topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    tsched = make(torch.optim.lr_scheduler, topt)
    expected = []
    for _ in range(20):
        expected.append(topt.param_groups[0]["lr"])
        topt.step()
        tsched.step()
    np.testing.assert_allclose(_lrs(lambda o: make(lr_scheduler, o), 20, 0.5), expected,
                               rtol=1e-12)


def test_reduce_on_plateau_matches_torch(rng):
    torch = pytest.importorskip("torch")
    metrics = list(np.round(rng.uniform(size=40), 1))
    kwargs = dict(mode="min", factor=0.5, patience=2, cooldown=1, threshold=0.05,
                  threshold_mode="abs", min_lr=0.01)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    sched = lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    for m in metrics:
        tsched.step(m)
        sched.step(m)
        assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"])


def test_clip_grad_norm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    grads = [rng.standard_normal(s) for s in ((3, 2), (4,))]
    ps = [nn.Parameter(np.zeros_like(g)) for g in grads]
    tps = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for p, tp, g in zip(ps, tps, grads):
        p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
    total = optim.clip_grad_norm_(ps, 0.7, norm_type=3.0)
    ttotal = torch.nn.utils.clip_grad_norm_(tps, 0.7, norm_type=3.0)
    assert total == pytest.approx(float(ttotal))
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-10)


# The one-pass kernels (convcore._kernels.optim) against the NumPy
# expressions they replace: the same bits, step after step. A gradient
# that is not C-contiguous sends a parameter through the expressions.
ONE_PASS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, kwargs", ONE_PASS)
def test_one_pass_update_equals_the_expressions(name, kwargs, dtype, rng):
    # 3 blocks and a remainder of the kernels' 32768, on 2 threads; and a
    # bias-sized parameter.
    shapes = [(3, 7, 4683), (5,)]
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    fast = [nn.Parameter(a.copy()) for a in start]
    slow = [nn.Parameter(a.copy()) for a in start]
    opt_fast = getattr(optim, name)(fast, **kwargs)
    opt_slow = getattr(optim, name)(slow, **kwargs)
    previous = convcore.set_num_threads(2)
    try:
        for step in range(4):
            for pf, ps in zip(fast, slow):
                g = rng.standard_normal(pf.shape).astype(dtype)
                if step == 2:
                    g[..., 0] = 0.0   # AMSGrad's max keeps an old value
                pf.grad = g.copy()
                ps.grad = np.asfortranarray(g) if g.ndim > 1 else g[::-1].copy()[::-1]
                assert not ps.grad.flags.c_contiguous
            opt_fast.step()
            opt_slow.step()
            for pf, ps in zip(fast, slow):
                np.testing.assert_array_equal(pf.data, ps.data)
                assert pf.data.dtype == dtype
    finally:
        convcore.set_num_threads(previous)
    for sf, ss in zip(opt_fast.state.values(), opt_slow.state.values()):
        for key, value in sf.items():
            np.testing.assert_array_equal(value, ss[key])
