"""convcore.training.viz writes PNG files (skipped without matplotlib)."""
import builtins

import numpy as np
import pytest

from convcore.training import viz

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def test_plots_write_png(tmp_path, rng):
    pytest.importorskip("matplotlib")
    hist = {"train_loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.7, 0.5],
            "train_acc": [0.5, 0.8, 0.9], "val_acc": [0.5, 0.75, 0.85], "lr": [0.1, 0.1, 0.01]}
    assert is_png(viz.plot_history(hist, tmp_path / "sub" / "curves.png"))
    cm = np.array([[5, 1, 0], [0, 4, 2], [1, 0, 6]])
    assert is_png(viz.plot_confusion_matrix(cm, tmp_path / "cm.png", ["a", "b", "c"]))
    assert is_png(viz.plot_kernels(rng.standard_normal((6, 3, 5, 5)), tmp_path / "k_rgb.png"))
    assert is_png(viz.plot_kernels(rng.standard_normal((5, 1, 3, 3)), tmp_path / "k_grey.png"))


def test_bad_arguments(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="square integer"):
        viz.plot_confusion_matrix(np.zeros((2, 3), int), tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 class names for 3"):
        viz.plot_confusion_matrix(np.eye(3, dtype=int), tmp_path / "x.png", ["a", "b"])
    with pytest.raises(ValueError, match="4-D"):
        viz.plot_kernels(np.zeros((3, 3)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="non-empty mapping"):
        viz.plot_history({}, tmp_path / "x.png")


def test_missing_matplotlib_message(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install 'convcore\[plot\]'"):
        viz.plot_history({"loss": [1.0]}, tmp_path / "x.png")
