"""fit()'s progress: a tqdm bar on a terminal; on a stream that is not a
TTY (a log file, a pipe) no carriage-return updates, one line per epoch."""
import io
import sys

import numpy as np
import pytest

from convcore import nn, optim
from convcore.training import fit
from convcore.training.progress import EpochLine, epoch_progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _fit(epochs=2, val=False):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, rng=0))
    x = np.arange(24, dtype=np.float32).reshape(6, 1, 2, 2) / 24
    y = np.array([0, 1] * 3)
    return fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), (x, y),
               (x, y) if val else None, epochs=epochs, batch_size=4, progress=True)


def test_non_tty_stderr_gets_one_plain_line_per_epoch(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    history = _fit(epochs=3, val=True)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    for line, loss, val_acc in zip(lines, history["train_loss"], history["val_acc"]):
        assert line.split(": ", 1)[1].startswith("2 batches, loss=")
        assert f"loss={loss:.4f}" in line and f"val_acc={val_acc:.3f}" in line


def test_terminal_stderr_gets_the_tqdm_bar(monkeypatch):
    pytest.importorskip("tqdm")
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    _fit(epochs=1)
    text = term.getvalue()
    assert "\r" in text and "epoch 1/1" in text and "2/2" in text


def test_epoch_line_writes_once_at_close():
    out = io.StringIO()
    line = EpochLine("epoch 2/5", out)
    for _ in range(7):
        line.update(1)
        line.set_postfix(loss="9.9", refresh=False)
    assert out.getvalue() == ""
    line.set_postfix({"loss": "0.5000", "acc": "-"})
    line.close()
    line.close()
    assert out.getvalue() == "epoch 2/5: 7 batches, loss=0.5000, acc=-\n"


@pytest.mark.parametrize("stream", [io.StringIO(), object()])
def test_streams_without_a_terminal_get_the_plain_line(stream):
    assert isinstance(epoch_progress(3, 0, 1, stream), EpochLine)


def test_closed_stream_is_not_a_terminal():
    stream = io.StringIO()
    stream.close()
    assert isinstance(epoch_progress(3, 0, 1, stream), EpochLine)
