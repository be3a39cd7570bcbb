"""convcore.load on a PyTorch .pt/.pth file (torch.save's zip archive or
its legacy pickle) says what the file is and how to load it, without ever
unpickling it."""
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

import convcore
from convcore import nn


def _zip_like_torch_save(path, prefix="resnet18"):
    # The layout torch.save writes (checked against torch below when importable).
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/data.pkl", pickle.dumps({"fc.weight": None}))
        z.writestr(f"{prefix}/version", "3\n")
        z.writestr(f"{prefix}/data/0", b"\0" * 8)


def _assert_points_at_torch_load(message, kind):
    assert kind in message
    assert "torch.load" in message and "load_state_dict" in message


def test_torch_zip_archive_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "resnet18.pth"
    _zip_like_torch_save(path)
    with pytest.raises(ValueError) as exc:
        convcore.load(path)
    _assert_points_at_torch_load(str(exc.value), "a PyTorch (torch.save) zip archive")
    assert str(path) in str(exc.value)


def test_legacy_pickle_is_named_and_never_unpickled(tmp_path, monkeypatch):
    path = tmp_path / "old.pt"
    with open(path, "wb") as f:
        pickle.dump({"w": [1.0, 2.0]}, f, protocol=2)
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(ValueError) as exc:
        convcore.load(str(path))
    _assert_points_at_torch_load(str(exc.value), "a pickle (PyTorch's legacy")


def test_other_zip_and_npz_keep_their_messages(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match="not written by convcore.save") as exc:
        convcore.load(path)
    assert "torch" not in str(exc.value)


def test_convcore_files_and_file_objects_still_load(tmp_path):
    net = nn.Linear(3, 2)
    path = tmp_path / "w.npz"
    convcore.save(net, path)
    np.testing.assert_array_equal(convcore.load(path)["weight"], net.weight.data)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(convcore.load(io.BytesIO(f.read()))["bias"],
                                      net.bias.data)


@pytest.mark.parametrize("legacy", [False, True])
def test_real_torch_save_files_and_the_hint_works(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    tnet = torch.nn.Linear(3, 2)
    path = os.fspath(tmp_path / "linear.pt")
    torch.save(tnet.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ValueError, match="torch.load") as exc:
        convcore.load(path)
    assert ("legacy" in str(exc.value)) == legacy
    # Following the message loads the weights.
    sd = torch.load(path, map_location="cpu", weights_only=True)
    net = nn.Linear(3, 2)
    net.load_state_dict({k: v.numpy() for k, v in sd.items()})
    np.testing.assert_array_equal(net.weight.data, tnet.weight.detach().numpy())
