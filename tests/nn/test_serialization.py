"""convcore.save / convcore.load: .npz round trips without pickle, clear
errors for truncated or foreign files, and torch-exported state dicts."""
import numpy as np
import pytest

import convcore
from convcore import nn


def net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False, rng=0), nn.BatchNorm2d(4),
                         nn.Conv2d(4, 2, 1, rng=1))


def test_save_load_round_trip(tmp_path):
    a = net()
    a[1].running_mean[...] = [1, 2, 3, 4]
    a[1].num_batches_tracked[...] = 5
    path = tmp_path / "model.weights"  # the name is used exactly as given
    convcore.save(a, path)
    assert path.exists()
    state = convcore.load(path)
    assert list(state) == list(a.state_dict())
    assert state["1.num_batches_tracked"].dtype == np.int64
    b = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False, rng=9), nn.BatchNorm2d(4),
                      nn.Conv2d(4, 2, 1, rng=9))
    b.load_state_dict(state)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_save_plain_mapping(tmp_path):
    path = tmp_path / "s.npz"
    convcore.save({"w": np.arange(3.0), "n": 4}, path)
    state = convcore.load(path)
    np.testing.assert_array_equal(state["w"], np.arange(3.0))
    assert int(state["n"]) == 4


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "m.npz"
    convcore.save(net(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or not a convcore .npz file"):
        convcore.load(path)


@pytest.mark.parametrize("content", [b"hello, not an npz", b"", b"\x80\x04K\x01."])
def test_foreign_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="convcore.load"):
        convcore.load(path)


def test_foreign_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(2))
    with pytest.raises(ValueError, match="not written by convcore.save"):
        convcore.load(path)


def test_object_arrays_refused(tmp_path):
    with pytest.raises(TypeError, match="'bad' is not a numeric array"):
        convcore.save({"bad": np.array([{}], dtype=object)}, tmp_path / "o.npz")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        convcore.load(tmp_path / "nope.npz")


def test_torch_exported_state_dict_loads_as_is(rng):
    torch = pytest.importorskip("torch")
    tnet = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 2 * 2, 3))
    tnet.train()
    tnet(torch.randn(5, 3, 4, 4))  # non-trivial running statistics
    tnet.eval()
    exported = {k: v.detach().numpy() for k, v in tnet.state_dict().items()}
    cnet = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    cnet.load_state_dict(exported)
    cnet.eval()
    assert int(cnet[1].num_batches_tracked) == 1
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():
        expected = tnet(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(cnet(x), expected, rtol=1e-5, atol=1e-6)
