"""Resuming with a different number of epochs: the cosine schedule is
rebuilt over the new length from the epoch reached (the rates a run of
that length has from there, decaying to eta_min at the new end), and a
log message says so; the same length resumes exactly as before."""
import logging
import math

import numpy as np
import pytest

from convcore import nn, optim
from convcore.optim.lr_scheduler import CosineAnnealingLR
from convcore.training import fit

LR = 0.1


def _setup(t_max, eta_min=0.0):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, rng=0))
    opt = optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    return model, opt, CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)


DATA = (np.arange(24, dtype=np.float32).reshape(6, 1, 2, 2) / 24, np.array([0, 1] * 3))


def _run(epochs, t_max, path, resume=None, eta_min=0.0):
    model, opt, sched = _setup(t_max, eta_min)
    history = fit(model, nn.CrossEntropyLoss(), opt, DATA, epochs=epochs, scheduler=sched,
                  checkpoint=path, resume=resume, progress=False, batch_size=3)
    return history, opt


def cosine(epoch, t_max, eta_min=0.0):
    """The closed form, float64: the rate of epoch `epoch` (from 0)."""
    return eta_min + (LR - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2


@pytest.mark.parametrize("done, old, new", [(5, 5, 10), (3, 5, 8), (2, 4, 3)])
def test_resumed_rates_follow_the_new_length(tmp_path, done, old, new, caplog):
    path = str(tmp_path / "run.npz")
    first, _ = _run(done, old, path)
    assert first["lr"] == pytest.approx([cosine(e, old) for e in range(done)], abs=1e-15)
    with caplog.at_level(logging.INFO, logger="convcore"):
        history, opt = _run(new, new, str(tmp_path / "more.npz"), resume=path)
    assert history["epoch"] == list(range(1, max(done, new) + 1))[:len(history["epoch"])]
    rates = history["lr"][done:]
    assert rates == pytest.approx([cosine(e, new) for e in range(done, new)], rel=1e-12,
                                  abs=1e-15)
    assert all(a > b for a, b in zip(rates, rates[1:]))   # decays, never rises again
    message = [r.getMessage() for r in caplog.records if r.name.startswith("convcore")]
    assert len(message) == 1
    assert (f"cosine schedule spans {old} epochs, this run {new}; rebuilt over "
            f"T_max={new} from epoch {done}") in message[0]


def test_old_schedule_would_have_risen_again(tmp_path):
    """What the rebuild prevents: 5 epochs done of T_max=5, resumed to 10
    with the checkpoint's length, the lr goes 0 and then up."""
    rising = [cosine(e, 5) for e in range(5, 10)]
    assert rising[0] == 0 and rising[-1] > rising[1] > 0
    path = str(tmp_path / "run.npz")
    _run(5, 5, path)
    history, _ = _run(10, 10, str(tmp_path / "more.npz"), resume=path)
    assert history["lr"][5] == pytest.approx(cosine(5, 10)) and history["lr"][5] > 0.04


def test_same_length_resumes_exactly_and_says_nothing(tmp_path, caplog):
    path = str(tmp_path / "run.npz")
    whole, whole_opt = _run(6, 6, str(tmp_path / "whole.npz"))
    _run(3, 6, path)
    with caplog.at_level(logging.INFO, logger="convcore"):
        resumed, resumed_opt = _run(6, 6, str(tmp_path / "again.npz"), resume=path)
    assert resumed["lr"] == whole["lr"]
    assert [r for r in caplog.records if r.name.startswith("convcore")] == []


def test_eta_min_is_kept(tmp_path):
    path = str(tmp_path / "run.npz")
    _run(2, 4, path, eta_min=0.01)
    history, opt = _run(6, 6, str(tmp_path / "more.npz"), resume=path, eta_min=0.01)
    assert history["lr"][2:] == pytest.approx([cosine(e, 6, 0.01) for e in range(2, 6)])


def test_matches_torch_cosine_schedule(tmp_path):
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "run.npz")
    _run(4, 4, path)
    history, _ = _run(9, 9, str(tmp_path / "more.npz"), resume=path)
    p = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([p], lr=LR, momentum=0.9)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=9)
    expected = []
    for _ in range(9):
        expected.append(topt.param_groups[0]["lr"])
        topt.step()
        tsched.step()
    assert history["lr"][4:] == pytest.approx(expected[4:], rel=1e-12, abs=1e-15)


def test_cli_resume_with_more_epochs_logs_the_rebuild(tmp_path, capsys):
    from convcore import cli
    ckpt = str(tmp_path / "c.npz")
    common = ["train", "--no-progress", "--limit", "64", "--batch-size", "32", "--threads", "1",
              "--checkpoint", ckpt]
    assert cli.main(common + ["--epochs", "2"]) == 0
    capsys.readouterr()
    assert cli.main(common + ["--epochs", "4", "--resume", ckpt]) == 0
    out = capsys.readouterr().out
    assert "cosine schedule spans 2 epochs, this run 4; rebuilt over T_max=4 from epoch 2" in out
    lrs = [float(line.split("lr=")[1].split()[0]) for line in out.splitlines()
           if line.startswith("epoch=")]
    assert len(lrs) == 2 and lrs[0] > lrs[1] > 0
