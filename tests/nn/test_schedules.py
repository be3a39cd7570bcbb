"""Step-level learning-rate schedules (OneCycleLR, LambdaLR, LinearLR,
SequentialLR): the rate (and the cycled momentum / beta1) step by step
against closed forms written out here and against torch's schedulers,
state_dict resume, argument checks."""
import math

import numpy as np
import pytest

from convcore import nn, optim
from convcore.optim import lr_scheduler
from bad_arguments import bad_argument_test


def _two_groups(make_opt, lr=(0.5, 0.2)):
    """An optimizer with two parameter groups of different rates."""
    return make_opt([{"params": [nn.Parameter(np.zeros(1))], "lr": lr[0]},
                     {"params": [nn.Parameter(np.zeros(2))], "lr": lr[1]}])


def _trace(opt, sched, steps):
    """(lr, momentum-or-beta1) of every group before each of `steps` steps."""
    out = []
    for _ in range(steps):
        out.append([(g["lr"], g["betas"][0] if "betas" in g else g.get("momentum"))
                    for g in opt.param_groups])
        opt.step()
        sched.step()
    return np.array(out, dtype=float)


# --- closed forms ------------------------------------------------------------------

def test_one_cycle_two_phases_closed_form():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0, momentum=0.9)
    total, top = 20, 0.4
    sched = lr_scheduler.OneCycleLR(opt, max_lr=top, total_steps=total)
    lo, hi, end = top / 25, top, top / 25 / 1e4
    up = 0.3 * total - 1                          # last step of the warm-up phase

    def cos(a, b, pct):
        return b + (a - b) * (1 + math.cos(math.pi * pct)) / 2

    expected = [(cos(lo, hi, s / up), cos(0.95, 0.85, s / up)) if s <= up else
                (cos(hi, end, (s - up) / (total - 1 - up)),
                 cos(0.85, 0.95, (s - up) / (total - 1 - up))) for s in range(total)]
    np.testing.assert_allclose(_trace(opt, sched, total)[:, 0], expected, rtol=1e-13)
    with pytest.raises(ValueError, match="total_steps is 20"):
        sched.step()  # the 20 steps were taken after step 0: one more is too many


def test_one_cycle_linear_three_phase_peaks_and_returns():
    opt = optim.Adam([nn.Parameter(np.zeros(1))], lr=1.0, betas=(0.9, 0.99))
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, epochs=2, steps_per_epoch=10,
                                    pct_start=0.25, anneal_strategy="linear", three_phase=True,
                                    div_factor=10, final_div_factor=100)
    trace = _trace(opt, sched, 20)[:, 0]
    lr, beta1 = trace[:, 0], trace[:, 1]
    # linear from 0.1 up to 1.0 at step 4, down to 0.1 at step 8, then to 0.001 at step 19
    np.testing.assert_allclose(lr[:5], np.linspace(0.1, 1.0, 5), rtol=1e-13)
    np.testing.assert_allclose(lr[4:9], np.linspace(1.0, 0.1, 5), rtol=1e-13)
    np.testing.assert_allclose(lr[8:], np.linspace(0.1, 0.001, 12), rtol=1e-12)
    np.testing.assert_allclose(beta1[:5], np.linspace(0.95, 0.85, 5), rtol=1e-13)
    np.testing.assert_allclose(beta1[8:], 0.95, rtol=1e-13)
    assert opt.param_groups[0]["betas"][1] == 0.99       # beta2 untouched


def test_linear_and_lambda_closed_forms():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.6)
    sched = lr_scheduler.LinearLR(opt, start_factor=0.25, end_factor=0.75, total_iters=4)
    factors = [0.25 + 0.5 * min(e, 4) / 4 for e in range(8)]
    np.testing.assert_allclose(_trace(opt, sched, 8)[:, 0, 0], [0.6 * f for f in factors],
                               rtol=1e-13)
    opt = _two_groups(lambda p: optim.SGD(p, lr=1.0))
    sched = lr_scheduler.LambdaLR(opt, [lambda e: 0.5 ** e, lambda e: 1 / (e + 1)])
    trace = _trace(opt, sched, 6)
    np.testing.assert_allclose(trace[:, 0, 0], [0.5 * 0.5 ** e for e in range(6)], rtol=1e-14)
    np.testing.assert_allclose(trace[:, 1, 0], [0.2 / (e + 1) for e in range(6)], rtol=1e-14)


def test_sequential_warmup_then_cosine():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    warm = lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3)
    cos = lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    sched = lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[3])
    expected = [0.1, 0.4, 0.7] + [(1 + math.cos(math.pi * e / 5)) / 2 for e in range(7)]
    np.testing.assert_allclose(_trace(opt, sched, 10)[:, 0, 0], expected, rtol=1e-12, atol=1e-15)


# --- state dicts ---------------------------------------------------------------------

class _Halving:
    """A callable object: LambdaLR saves its attributes."""

    def __init__(self, rate):
        self.rate = rate

    def __call__(self, epoch):
        return self.rate ** epoch


@pytest.mark.parametrize("make", [
    lambda o: lr_scheduler.OneCycleLR(o, max_lr=[0.3, 0.1], total_steps=15),
    lambda o: lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=6),
    lambda o: lr_scheduler.LambdaLR(o, _Halving(0.8)),
    lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.LinearLR(o, 0.5, total_iters=2), lr_scheduler.ExponentialLR(o, 0.7)],
        milestones=[4]),
])
def test_state_dict_resumes_the_schedule(make):
    def fresh():
        opt = _two_groups(lambda p: optim.SGD(p, lr=1.0, momentum=0.9))
        return opt, make(opt)

    opt, sched = fresh()
    straight = _trace(opt, sched, 14)
    opt, sched = fresh()
    first = _trace(opt, sched, 6)
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    opt, sched = fresh()
    opt.load_state_dict(saved_opt)
    sched.load_state_dict(saved_sched)
    np.testing.assert_allclose(np.concatenate([first, _trace(opt, sched, 8)]), straight,
                               rtol=1e-13)


def test_lambda_state_dict_keeps_callable_objects_state():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    halving = _Halving(0.5)
    state = lr_scheduler.LambdaLR(opt, [halving]).state_dict()
    assert state["lr_lambdas"] == [{"rate": 0.5}]
    other = _Halving(0.9)
    lr_scheduler.LambdaLR(optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0), [other]) \
        .load_state_dict(state)
    assert other.rate == 0.5
    assert lr_scheduler.LambdaLR(opt, lambda e: 1.0).state_dict()["lr_lambdas"] == [None]


# --- torch peers ---------------------------------------------------------------------

SCHEDULES = {  # id -> (make(module, optimizer), optimizer name and kwargs, steps)
    "one_cycle_sgd": (lambda m, o: m.OneCycleLR(o, max_lr=[0.3, 0.1], total_steps=25),
                      ("SGD", {"lr": 0.1, "momentum": 0.9}), 25),
    "one_cycle_adam_linear": (
        lambda m, o: m.OneCycleLR(o, max_lr=0.01, epochs=3, steps_per_epoch=7, pct_start=0.4,
                                  anneal_strategy="linear", div_factor=10.0,
                                  final_div_factor=50.0),
        ("Adam", {"lr": 0.1, "betas": (0.8, 0.99)}), 21),
    "one_cycle_three_phase_rmsprop": (
        lambda m, o: m.OneCycleLR(o, max_lr=0.05, total_steps=17, three_phase=True,
                                  base_momentum=0.7, max_momentum=[0.9, 0.8]),
        ("RMSprop", {"lr": 0.1, "momentum": 0.5}), 17),
    "one_cycle_no_momentum": (
        lambda m, o: m.OneCycleLR(o, max_lr=0.05, total_steps=9, cycle_momentum=False),
        ("SGD", {"lr": 0.1}), 9),
    "one_cycle_one_step": (lambda m, o: m.OneCycleLR(o, max_lr=0.2, total_steps=1),
                           ("SGD", {"lr": 0.1, "momentum": 0.9}), 1),
    "one_cycle_two_steps": (lambda m, o: m.OneCycleLR(o, max_lr=0.2, total_steps=2),
                            ("SGD", {"lr": 0.1, "momentum": 0.9}), 2),
    "lambda": (lambda m, o: m.LambdaLR(o, lambda e: 0.9 ** e + 0.01 * e),
               ("SGD", {"lr": 0.1}), 12),
    "linear_warmup": (lambda m, o: m.LinearLR(o, total_iters=4), ("SGD", {"lr": 0.1}), 10),
    "linear_decay": (lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.0,
                                             total_iters=7), ("Adam", {"lr": 0.1}), 10),
    "sequential": (
        lambda m, o: m.SequentialLR(o, [m.LinearLR(o, 0.2, 0.6, total_iters=3),
                                        m.StepLR(o, 2, gamma=0.5),
                                        m.CosineAnnealingLR(o, T_max=4, eta_min=0.01)],
                                    milestones=[3, 7]),
        ("SGD", {"lr": 0.1}), 16),
    "sequential_multistep_lambda": (
        lambda m, o: m.SequentialLR(o, [m.MultiStepLR(o, [1, 2], gamma=0.5),
                                        m.LambdaLR(o, lambda e: 1 / (1 + e))],
                                    milestones=[4]),
        ("SGD", {"lr": 0.1}), 10),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_matches_torch(name):
    torch = pytest.importorskip("torch")
    make, (opt_name, kwargs), steps = SCHEDULES[name]
    topt = _two_groups(lambda p: getattr(torch.optim, opt_name)(
        [{**g, "params": [torch.nn.Parameter(torch.zeros(1))]} for g in p], **kwargs))
    tsched = make(torch.optim.lr_scheduler, topt)
    expected = _trace(topt, tsched, steps)
    opt = _two_groups(lambda p: getattr(optim, opt_name)(p, **kwargs))
    np.testing.assert_allclose(_trace(opt, make(lr_scheduler, opt), steps), expected,
                               rtol=1e-13, atol=1e-16)


def _sgd():
    return optim.SGD([nn.Parameter(np.zeros(1))], lr=0.1)


test_bad_arguments = bad_argument_test([
    (lambda: lr_scheduler.OneCycleLR(_sgd(), 0.1), ValueError,
     "give total_steps, or epochs and steps_per_epoch"),
    (lambda: lr_scheduler.OneCycleLR(_sgd(), 0.1, total_steps=0), ValueError,
     "total_steps must be a positive int"),
    (lambda: lr_scheduler.OneCycleLR(_sgd(), 0.1, epochs=2, steps_per_epoch=2.5), ValueError,
     "steps_per_epoch must be a positive int"),
    (lambda: lr_scheduler.OneCycleLR(_sgd(), 0.1, 10, pct_start=1.5), ValueError,
     "pct_start must be a number in [0, 1]"),
    (lambda: lr_scheduler.OneCycleLR(_sgd(), 0.1, 10, anneal_strategy="exp"), ValueError,
     "anneal_strategy must be 'cos' or 'linear'"),
    (lambda: lr_scheduler.OneCycleLR(_sgd(), [0.1, 0.2], 10), ValueError,
     "max_lr must have one value per parameter group (1), got 2"),
    (lambda: lr_scheduler.LinearLR(_sgd(), start_factor=0), ValueError,
     "start_factor must be in (0, 1]"),
    (lambda: lr_scheduler.LinearLR(_sgd(), end_factor=1.5), ValueError,
     "end_factor must be in [0, 1]"),
    (lambda: lr_scheduler.LinearLR(_sgd(), total_iters=0), ValueError,
     "total_iters must be an int >= 1"),
    (lambda: lr_scheduler.LambdaLR(_sgd(), 0.5), TypeError, "lr_lambda must be callable"),
    (lambda: lr_scheduler.SequentialLR(_sgd(), [], []), ValueError, "at least one scheduler"),
    (lambda: lr_scheduler.SequentialLR(_sgd(), [lr_scheduler.StepLR(_sgd(), 2)], []),
     ValueError, "belongs to another optimizer"),
])


def test_sequential_needs_one_milestone_fewer():
    opt = _sgd()
    with pytest.raises(ValueError, match="got 2 schedulers and 2 milestones"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 2),
                                        lr_scheduler.StepLR(opt, 3)], [1, 2])


def test_one_cycle_needs_a_momentum_to_cycle():
    class Plain(optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": 0.1})

    with pytest.raises(ValueError, match="cycle_momentum needs an optimizer with momentum"):
        lr_scheduler.OneCycleLR(Plain([nn.Parameter(np.zeros(1))]), 0.1, 10)
    lr_scheduler.OneCycleLR(Plain([nn.Parameter(np.zeros(1))]), 0.1, 10, cycle_momentum=False)
