"""`convcore train`: the default run meets its accuracy target, options
work end to end (save, checkpoint/resume, plots, IDX data), bad arguments
exit 2 with usage, missing data exits 1 with a message naming the files."""
import os
import re

import numpy as np
import pytest

import convcore
from convcore import cli
from convcore.data import load_digits_arrays, write_idx
from subprocess_helpers import run_python


def run_train(*args, cwd=None):
    """`python -m convcore train args` with the same convcore as this run."""
    return run_python("-m", "convcore", "train", *args, cwd=cwd)


def test_default_run_reaches_97_percent_on_held_out_digits():
    out = run_train("--no-progress")  # digits default to one thread
    assert out.returncode == 0, out.stderr
    text = out.stdout
    acc = float(re.search(r"test accuracy ([\d.]+)%", text).group(1))
    assert acc >= 97.0, text  # measured 98.05% (seed 0)
    assert "lenet_digits" in text and "10 epochs" in text and "1 thread" in text
    assert "macro avg" in text and "worst by F1" in text       # per-class report
    assert re.search(r"train [\d,]+ images/s", text)            # throughput
    assert re.search(r"time\s+[\d.]+ s", text)
    assert "Traceback" not in out.stderr


def test_save_checkpoint_resume_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    ckpt, weights, plots = tmp_path / "run.npz", tmp_path / "w.npz", tmp_path / "plots"
    common = ["--threads", "1", "--no-progress", "--limit", "200", "--batch-size", "50",
              "--model", "lenet5", "--optimizer", "sgd", "--lr", "0.05", "--augment"]
    out = run_train(*common, "--epochs", "2", "--checkpoint", str(ckpt), "--save", str(weights),
                    "--plot", str(plots))
    assert out.returncode == 0, out.stderr
    assert "epoch=1 " in out.stdout and "epoch=2 " in out.stdout
    for name in ("curves.png", "confusion.png", "kernels.png"):
        assert (plots / name).stat().st_size > 1000
    state = convcore.load(weights)
    assert state["c1.weight"].shape == (6, 1, 3, 3)
    out = run_train(*common, "--epochs", "3", "--resume", str(ckpt))
    assert out.returncode == 0, out.stderr
    assert "epoch=3 " in out.stdout and "epoch=1 " not in out.stdout
    assert "test accuracy" in out.stdout


def _fake_mnist(directory, n_train=600, n_test=200):
    """MNIST-format files made from the real 8x8 digits, scaled to 24x24 and
    centred in 28x28 (so LeNet-5's 28x28 path learns something real)."""
    images, labels = load_digits_arrays()
    big = np.kron(images.astype(np.float64), np.ones((3, 3))) * (255 / 16)
    big = np.pad(big, ((0, 0), (2, 2), (2, 2))).round().astype(np.uint8)
    os.makedirs(directory, exist_ok=True)
    write_idx(os.path.join(directory, "train-images-idx3-ubyte.gz"), big[:n_train])
    write_idx(os.path.join(directory, "train-labels-idx1-ubyte.gz"), labels[:n_train])
    write_idx(os.path.join(directory, "t10k-images-idx3-ubyte"), big[-n_test:])
    write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte"), labels[-n_test:])


def test_mnist_files_train_lenet5_at_28x28(tmp_path):
    _fake_mnist(tmp_path / "mnist")
    out = run_train("--dataset", "mnist", "--data-dir", str(tmp_path / "mnist"), "--threads", "1",
                    "--no-progress", "--epochs", "2")
    assert out.returncode == 0, out.stderr
    assert "lenet5, relu, max (61,706 parameters)" in out.stdout and "1x28x28" in out.stdout
    assert "batch 32" in out.stdout
    acc = float(re.search(r"test accuracy ([\d.]+)%", out.stdout).group(1))
    assert acc > 50.0, out.stdout  # 600 images, 2 epochs: far above 10% chance


def test_missing_data_dir_names_the_files_and_exits_1(tmp_path):
    missing = tmp_path / "nowhere"
    out = run_train("--dataset", "mnist", "--data-dir", str(missing))
    assert out.returncode == 1
    assert "train-images-idx3-ubyte" in out.stderr and str(missing) in out.stderr
    assert "Traceback" not in out.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    code = cli.main(["train", "--dataset", "cifar10", "--data-dir", str(empty)])
    assert code == 1


@pytest.mark.parametrize("argv", [
    ["--epochs", "0"], ["--epochs", "two"], ["--dataset", "svhn"], ["--model", "lenet6"],
    ["--lr", "-1"], ["--lr", "nan"], ["--batch-size", "0"], ["--threads", "0"],
    ["--optimizer", "lbfgs"], ["--schedule", "linear"], ["--seed", "-3"], ["--bogus"],
    ["--weight-decay", "-0.1"], ["--limit", "0"],
])
def test_bad_arguments_print_usage_and_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: convcore" in err and "error:" in err


def test_file_dataset_without_data_dir_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--dataset", "fashion-mnist"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: convcore train" in err and "--data-dir" in err


@pytest.mark.parametrize("argv,fragment", [
    (["--resume", "/no/such/checkpoint.npz"], "no checkpoint file"),
    (["--model", "alexnet"], "cannot take digits images (1x8x8)"),
])
def test_unusable_options_exit_1_with_a_message(capsys, argv, fragment):
    assert cli.main(["train", *argv]) == 1
    assert fragment in capsys.readouterr().err


def test_every_option_has_help():
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    options = [a for a in train._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 18
    for action in options:
        assert action.help and len(action.help) > 10, action.option_strings


def test_cifar10_files_train_resnet20_with_augmentation(tmp_path):
    from convcore.data import write_cifar_batch
    g = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = g.integers(0, 10, 20)
        write_cifar_batch(d / name, g.integers(0, 256, (20, 3, 32, 32)), labels)
    out = run_train("--dataset", "cifar10", "--data-dir", str(tmp_path), "--threads", "1",
                    "--no-progress", "--epochs", "1", "--batch-size", "25", "--augment")
    assert out.returncode == 0, out.stderr
    assert "resnet20 (269,722 parameters)" in out.stdout and "3x32x32" in out.stdout
    assert "100 train / 20 test" in out.stdout and "test accuracy" in out.stdout


def test_validation_split_and_early_stopping(capsys):
    threads = convcore.get_num_threads()
    code = cli.main(["train", "--no-progress", "--limit", "300", "--val-fraction", "0.25",
                     "--early-stop", "1", "--epochs", "40", "--lr", "0.02"])
    assert code == 0
    assert convcore.get_num_threads() == threads  # the digits' one-thread default is undone
    out = capsys.readouterr().out
    assert "224 train / 76 validation / 359 test" in out  # stratified: per-class rounding
    assert "val_acc=" in out and "val_loss=" in out
    # patience 1 at a high learning rate: the validation loss stalls long before 40 epochs
    assert "early stop after epoch" in out and "epoch=40 " not in out
