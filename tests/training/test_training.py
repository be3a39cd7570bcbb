"""convcore.training: fit converges on the real digits, resume equals an
uninterrupted run, early stopping, evaluation, fine-tuning helpers,
checkpoint errors, cross-validation and multi-crop evaluation; end to end,
a small CNN learning a toy task through the layer API."""
import numpy as np
import pytest

import convcore
from convcore import models, nn, optim
from convcore.data import DataLoader, Normalize, load_digits
from convcore.training import (EarlyStopping, LambdaCallback, ModelCheckpoint, cross_validate,
                               evaluate, evaluate_multi_crop, find_head, fit, freeze, predict,
                               replace_head, trainable_parameters, unfreeze)
from convcore.training.checkpoint import load_checkpoint, save_checkpoint
from nn_helpers import one_kernel_thread  # noqa: F401 (a fixture)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny 8x8 batches on shared cores: one thread avoids OpenMP spin-waiting.
    previous = convcore.set_num_threads(1)
    yield
    convcore.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits():
    train, test = load_digits(seed=0)
    return train, test, Normalize.fit(train.images)


def small_net(seed, dropout=0.0):
    """A quick 8x8 CNN with a Dropout layer (its RNG state is part of a run)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, rng=seed), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(dropout, rng=seed + 100), nn.Linear(8 * 4 * 4, 10, rng=seed))


def test_fit_on_digits_converges(digits):
    train, test, norm = digits
    model = models.lenet_digits(rng=0)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(train, 32, shuffle=True, seed=0, transform=norm)
    history = fit(model, nn.CrossEntropyLoss(), opt, loader, DataLoader(test, 256, transform=norm),
                  epochs=3, progress=False)
    assert history["epoch"] == [1, 2, 3]
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert history["train_loss"][0] < 2.31  # below chance level after one epoch
    # measured 0.950 with these seeds; the floor leaves room for BLAS rounding
    assert history["val_acc"][-1] >= 0.93
    assert all(v > 0 for v in history["images_per_s"])
    res = evaluate(model, DataLoader(test, 100, transform=norm), nn.CrossEntropyLoss())
    assert res.accuracy == pytest.approx(history["val_acc"][-1])
    assert res.loss == pytest.approx(history["val_loss"][-1], rel=1e-5)


def _run(digits, epochs, seed=3, **fit_kwargs):
    train, _, norm = digits
    model = small_net(seed, dropout=0.3)
    opt = optim.Adam(model.parameters(), lr=0.01)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    sub = train.subset(np.arange(256))
    loader = DataLoader(sub, 32, shuffle=True, seed=11, transform=norm)
    history = fit(model, nn.CrossEntropyLoss(), opt, loader, sub, epochs=epochs,
                  scheduler=sched, progress=False, **fit_kwargs)
    return model, opt, sched, history


def test_resume_equals_uninterrupted_run(digits, tmp_path):
    full, full_opt, full_sched, full_hist = _run(digits, 3)
    ckpt = tmp_path / "run.npz"
    _run(digits, 2, checkpoint=str(ckpt))
    # a differently initialised model: everything must come from the file
    resumed, opt, sched, hist = _run(digits, 3, seed=99, resume=str(ckpt))
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert hist["epoch"] == [1, 2, 3]
    np.testing.assert_array_equal(hist["train_loss"], full_hist["train_loss"])
    assert opt.param_groups[0]["lr"] == full_opt.param_groups[0]["lr"] == 0.01 * 0.5 ** 3
    st_a, st_b = full_opt.state_dict()["state"], opt.state_dict()["state"]
    assert st_a[0]["step"] == st_b[0]["step"] == 3 * 8
    np.testing.assert_array_equal(st_a[0]["exp_avg"], st_b[0]["exp_avg"])


def test_checkpoint_file_roundtrip_and_errors(tmp_path):
    model = small_net(0)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(np.ones((2, 1, 8, 8), np.float32))
    model.backward(np.ones((2, 10), np.float32))
    opt.step()
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, opt, epoch=4, history={"train_loss": [1.0, 0.5]},
                    extra={"note": "x"})
    fresh = small_net(5)
    fresh_opt = optim.SGD(fresh.parameters(), lr=0.3, momentum=0.9)
    meta = load_checkpoint(path, fresh, fresh_opt)
    assert meta["epoch"] == 4 and meta["history"]["train_loss"] == [1.0, 0.5]
    assert meta["extra"] == {"note": "x"}
    assert fresh_opt.param_groups[0]["lr"] == 0.1
    np.testing.assert_array_equal(fresh[0].weight.data, model[0].weight.data)
    buf = fresh_opt.state_dict()["state"][0]["momentum_buffer"]
    np.testing.assert_array_equal(buf, opt.state_dict()["state"][0]["momentum_buffer"])
    with pytest.raises(ValueError, match="holds SGD optimizer state, not Adam"):
        load_checkpoint(path, small_net(0), optim.Adam(small_net(0).parameters()))
    plain = tmp_path / "weights.npz"
    convcore.save(model, plain)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_checkpoint(plain, small_net(0))
    with pytest.raises(FileNotFoundError):
        fit(small_net(0), nn.CrossEntropyLoss(), opt, (np.zeros((4, 1, 8, 8), np.float32),
                                                        np.zeros(4, np.int64)),
            epochs=1, resume=str(tmp_path / "missing.npz"), progress=False)


def test_early_stopping_stops_and_restores_best(digits):
    train, _, norm = digits
    sub = train.subset(np.arange(128))
    loader = DataLoader(sub, 32, seed=0, transform=norm)
    # lr = 0: nothing improves after the first epoch, so patience 2 stops at epoch 3
    model = small_net(1)
    stopper = EarlyStopping(monitor="train_loss", patience=2)
    hist = fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.0), loader,
               epochs=10, callbacks=[stopper], progress=False)
    assert hist["epoch"] == [1, 2, 3] and hist.stopped_early and hist.best_epoch == 0
    # "max" of a falling loss: epoch 1 is best; the model ends with its weights
    model = small_net(2)
    seen = {}
    keep = LambdaCallback(on_epoch_end=lambda s, logs: seen.setdefault(s.epoch,
                                                                       s.model.state_dict()))
    hist = fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-2), loader,
               epochs=10, callbacks=[keep, EarlyStopping("train_loss", 1, mode="max")],
               progress=False)
    assert len(hist["epoch"]) == 2 and hist["train_loss"][1] < hist["train_loss"][0]
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, seen[0][k], err_msg=k)


def test_early_stopping_needs_its_metric():
    model = small_net(0)
    data = (np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64))
    with pytest.raises(KeyError, match="val_loss"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), data,
            epochs=2, callbacks=[EarlyStopping()], progress=False)


def test_model_checkpoint_callback_and_plateau_scheduler(digits, tmp_path):
    train, _, norm = digits
    sub = train.subset(np.arange(64))
    model = small_net(0)
    opt = optim.SGD(model.parameters(), lr=0.0)
    plateau = optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    saver = ModelCheckpoint(str(tmp_path / "m-{epoch}.npz"), monitor="train_loss")
    opt.param_groups[0]["lr"] = 0.0
    fit(model, nn.CrossEntropyLoss(), opt, DataLoader(sub, 32, transform=norm), epochs=2,
        scheduler=plateau, callbacks=[saver], progress=False)
    assert [p.rsplit("/", 1)[-1] for p in saver.saved] == ["m-1.npz", "m-2.npz"]
    assert plateau.last_epoch == 2 and np.isfinite(plateau.best)  # stepped with the loss
    state = convcore.load(saver.saved[-1])
    np.testing.assert_array_equal(state["0.weight"], model[0].weight.data)


def test_evaluate_reports_per_class_metrics_and_restores_mode(digits):
    _, test, norm = digits
    model = small_net(0)
    model.train()
    res = evaluate(model, DataLoader(test, 64, transform=norm), nn.CrossEntropyLoss())
    assert model.training
    scores, labels = predict(model, DataLoader(test, 64, transform=norm))
    assert scores.shape == (len(test), 10)
    np.testing.assert_array_equal(labels, test.labels)
    np.testing.assert_array_equal(res.y_pred, scores.argmax(1))
    assert res.accuracy == pytest.approx(np.mean(res.y_pred == test.labels))
    assert res.metrics.confusion.sum() == len(test)
    assert res.metrics.class_names == test.classes
    assert "macro avg" in res.report()


def test_non_finite_loss_names_the_batch():
    model = small_net(0)
    x = np.zeros((8, 1, 8, 8), np.float32)
    x[5, 0, 3, 3] = np.nan
    with pytest.raises(FloatingPointError, match="batch 1"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1),
            DataLoader((x, np.zeros(8, np.int64)), 4), epochs=1, progress=False)


def test_replace_head_and_freeze_train_only_the_head(digits):
    train, _, norm = digits
    model = models.lenet5(input_size=8, rng=0)
    before = model.state_dict()
    name = replace_head(model, 3, rng=1)
    assert name == "output" and find_head(model)[2] == "output"
    assert list(dict(model.named_children())) == [n for n, _ in models.lenet5(
        input_size=8).named_children()]
    assert freeze(model) == 10 and unfreeze(model, name) == 2
    assert len(trainable_parameters(model)) == 2
    sub = train.subset(np.flatnonzero(train.labels < 3)[:64])
    opt = optim.SGD(trainable_parameters(model), lr=0.1)
    fit(model, nn.CrossEntropyLoss(), opt, DataLoader(sub, 32, transform=norm), epochs=1,
        progress=False)
    after = model.state_dict()
    for k in before:
        if not k.startswith("output."):
            np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert after["output.weight"].shape == (3, 84)
    assert model.c1.weight.grad is None
    with pytest.raises(ValueError, match="no module or parameter named 'nope'"):
        freeze(model, "nope")


def test_replace_head_in_nested_classifier():
    from convcore import init
    with init.skip_init():
        model = models.vgg11(num_classes=1000, input_size=32, hidden=16)
    assert replace_head(model, 4) == "classifier.6"
    assert model.classifier[6].out_features == 4
    assert model.summary((3, 32, 32)).rows[-1].output_shape == (4,)


def test_cross_validate_two_folds(digits):
    train, _, norm = digits
    sub = train.subset(np.arange(200))
    results, mean, std = cross_validate(
        lambda fold: small_net(fold), nn.CrossEntropyLoss(),
        lambda m: optim.Adam(m.parameters(), lr=1e-2), sub, k=2, epochs=2, batch_size=32,
        transform=norm)
    assert len(results) == 2
    assert sum(len(r.y_true) for r in results) == 200
    assert mean == pytest.approx(np.mean([r.accuracy for r in results]))
    assert 0.0 <= std <= 0.5 and mean > 0.3  # well above chance after 2 short epochs


def test_multi_crop_at_full_size_equals_plain_evaluation(digits):
    _, test, norm = digits
    model = small_net(0)
    images = norm(np.array(test.images[:40]))
    labels = test.labels[:40]
    acc, mean = evaluate_multi_crop(model, (images, labels), 8, flips=False)
    plain = evaluate(model, (images, labels))
    assert acc == pytest.approx(plain.accuracy)
    assert mean.shape == (40, 10) and np.allclose(mean.sum(1), 1.0)
    acc10, mean10 = evaluate_multi_crop(model, (images, labels), 8, flips=True)
    assert 0.0 <= acc10 <= 1.0 and mean10.shape == (40, 10)


def test_fit_regression_with_mse_has_no_accuracy(rng):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, rng=0))
    x = rng.standard_normal((16, 1, 2, 2)).astype(np.float32)
    target = x.reshape(16, 4)[:, :2] * 2.0
    batches = [(x[:8], target[:8]), (x[8:], target[8:])]
    hist = fit(model, nn.MSELoss(), optim.Adam(model.parameters(), lr=0.05), batches,
               epochs=30, progress=False)
    assert hist["train_acc"] == [None] * 30
    assert hist["train_loss"][-1] < 0.05 * hist["train_loss"][0]


# --- end to end: a small CNN learns a toy task through the layer API ---------

@pytest.mark.usefixtures("one_kernel_thread")
def test_small_cnn_learns_toy_task(rng):
    # class 1 images hold a bright vertical bar, class 0 a horizontal one
    n = 64
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    pos = rng.integers(1, 7, n)
    for i in range(n):
        if y[i]:
            x[i, 0, :, pos[i]] += 1.5
        else:
            x[i, 0, pos[i], :] += 1.5
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, rng=0), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, rng=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 2, rng=2))
    model[0].first_layer = True
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=0.02)
    sched = optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.5)
    losses = []
    for step in range(60):
        idx = rng.choice(n, 16, replace=False)
        losses.append(loss_fn(model(x[idx]), y[idx]))
        assert model.backward(loss_fn.backward()) is None  # first layer: no input grad
        opt.step()
        opt.zero_grad()
        sched.step()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    model.eval()
    accuracy = np.mean(model(x).argmax(axis=1) == y)
    assert accuracy > 0.9
