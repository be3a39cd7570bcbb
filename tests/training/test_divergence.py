"""A non-finite loss is blamed on the right cause: NaN/inf in the data is
reported with its batch, samples and data-set rows; only a loss that
diverges on finite data says to lower the learning rate."""
import numpy as np
import pytest

from convcore import nn, optim
from convcore.data import DataLoader
from convcore.training import fit
from convcore.training.divergence import non_finite_loss_error


def small_net(seed):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=seed), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3, rng=seed))


def _fit(x, y, lr=0.1, shuffle=False, batch=4):
    model = small_net(0)
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=lr),
        DataLoader((x, y), batch, shuffle=shuffle, seed=3), epochs=1, progress=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_batch_sample_and_row(bad):
    x = np.zeros((12, 1, 8, 8), np.float32)
    x[6, 0, 3, 3] = bad          # batch 1, sample 2
    x.setflags(write=False)
    with pytest.raises(FloatingPointError) as exc:
        _fit(x, np.zeros(12, np.int64))
    msg = str(exc.value)
    assert "input data holds NaN or inf values in batch 1, samples 2 " in msg
    assert "(data set rows 6)" in msg
    assert "learning rate" not in msg.replace("not a learning-rate problem", "")


def test_shuffled_rows_are_the_data_sets_rows():
    x = np.zeros((12, 1, 8, 8), np.float32)
    x[[4, 9]] = np.nan
    loader = DataLoader((x, np.zeros(12, np.int64)), 4, shuffle=True, seed=3)
    order = loader.order(0)
    first = min(int(np.flatnonzero(order == 4)[0]), int(np.flatnonzero(order == 9)[0]))
    batch, in_batch = divmod(first, 4)
    with pytest.raises(FloatingPointError, match=f"in batch {batch}, samples {in_batch}") \
            as exc:
        _fit(x, np.zeros(12, np.int64), shuffle=True)
    rows = [int(order[batch * 4 + i]) for i in range(4) if order[batch * 4 + i] in (4, 9)]
    assert f"data set rows {', '.join(map(str, rows))})" in str(exc.value)


def test_diverging_loss_on_finite_data_says_lower_the_learning_rate():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32) * 10
    y = rng.integers(0, 3, 16)
    with pytest.raises(FloatingPointError) as exc:
        _fit(x, y, lr=1e30)
    msg = str(exc.value)
    assert "finite input data: training diverged; lower the learning rate (lr=1e+30)" in msg


def test_non_finite_float_targets_are_named():
    x = np.zeros((3, 2), np.float32)
    y = np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 1.0]])
    err = non_finite_loss_error(float("nan"), 7, x, y, 0.1)
    assert "target data holds NaN or inf values in batch 7, samples 1;" in str(err)


def test_long_lists_are_cut_and_counted():
    x = np.full((9, 2), np.nan)
    err = non_finite_loss_error(float("nan"), 0, x, np.zeros(9, np.int64), 0.1)
    assert "samples 0, 1, 2, 3, 4, ... (9 in all)" in str(err)


def test_batch_of_one_with_plain_iterable_loader():
    x = np.zeros((1, 1, 8, 8), np.float32)
    x[0, 0, 0, 0] = np.nan
    model = small_net(0)
    with pytest.raises(FloatingPointError, match="batch 0, samples 0; the loss became nan"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1),
            [(x, np.zeros(1, np.int64))], epochs=1, progress=False)
