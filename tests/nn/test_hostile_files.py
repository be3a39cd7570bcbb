"""State files load without pickle, and truncated, foreign or hostile files
(object arrays, non-numeric dtypes, headers declaring huge shapes) are
refused with a ValueError that says what is wrong, before numpy allocates."""
import io
import os
import zipfile

import numpy as np
import pytest

import convcore
from convcore import nn

MARKER = "__convcore_state_dict__"


def _npy(header, payload):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def _npz(path, entries):
    marker = io.BytesIO()
    np.save(marker, np.array(1, np.int64))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MARKER + ".npy", marker.getvalue())
        for name, data in entries.items():
            z.writestr(name + ".npy", data)
    return path


@pytest.fixture
def saved(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    path = str(tmp_path / "model.npz")
    convcore.save(model, path)
    return model, path


def test_round_trip(saved):
    model, path = saved
    state = convcore.load(path)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(state[key], value)
        assert state[key].dtype == np.asarray(value).dtype


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file(saved, tmp_path, fraction):
    _, path = saved
    data = open(path, "rb").read()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ValueError, match="convcore.load: .*(truncated|not a convcore)"):
        convcore.load(str(cut))


def test_flipped_bytes_never_crash(saved, tmp_path):
    _, path = saved
    data = bytearray(open(path, "rb").read())
    rng = np.random.default_rng(0)
    for trial in range(40):
        bad = bytearray(data)
        for pos in rng.integers(0, len(bad), size=3):
            bad[pos] ^= 0xFF
        target = tmp_path / f"flip{trial}.npz"
        target.write_bytes(bytes(bad))
        try:
            convcore.load(str(target))          # a flip in padding may be harmless
        except ValueError as e:
            assert str(e).startswith("convcore.load")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage",
                                     os.urandom(256)])
def test_foreign_bytes(tmp_path, content):
    path = tmp_path / "foreign.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="convcore.load"):
        convcore.load(str(path))


def test_foreign_npy_and_npz(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(3))
    with pytest.raises(ValueError, match="single .npy array"):
        convcore.load(str(tmp_path / "a.npy"))
    np.savez(tmp_path / "b.npz", w=np.ones(3))
    with pytest.raises(ValueError, match="not written by convcore.save"):
        convcore.load(str(tmp_path / "b.npz"))


def test_object_array_is_never_unpickled(tmp_path):
    canary = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {canary}'\ntR.".encode()
    path = _npz(str(tmp_path / "evil.npz"), {
        "w": _npy({"descr": "|O", "fortran_order": False, "shape": (1,)}, payload)})
    with pytest.raises(ValueError, match="entry 'w' has dtype object.*pickle"):
        convcore.load(path)
    assert not canary.exists()
    # The same through numpy's own savez (which pickles object arrays).
    np.savez(tmp_path / "obj.npz", w=np.array([{"a": 1}], dtype=object),
             **{MARKER: np.array(1)})
    with pytest.raises(ValueError, match="dtype object"):
        convcore.load(str(tmp_path / "obj.npz"))


@pytest.mark.parametrize("descr", ["<U5", "|S3", [("a", "<f4"), ("b", "<i4")], "<M8[s]"])
def test_non_numeric_dtypes(tmp_path, descr):
    dtype = np.dtype(descr)
    path = _npz(str(tmp_path / "dt.npz"), {"w": _npy(
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
         "shape": (2,)}, b"\0" * (2 * dtype.itemsize))})
    with pytest.raises(ValueError, match="numeric arrays only"):
        convcore.load(path)


@pytest.mark.parametrize("shape", [(2**40, 2**40), (2**20, 2**20), (3 * 2**30,), (5,), ()])
def test_declared_shape_must_match_the_bytes(tmp_path, shape):
    path = _npz(str(tmp_path / "huge.npz"), {"w": _npy(
        {"descr": "<f4", "fortran_order": False, "shape": shape}, b"\0" * 16)})
    with pytest.raises(ValueError, match=r"entry 'w' declares shape .* holds 16 bytes"):
        convcore.load(path)


def test_wrong_dtype_or_shape_rejected_by_the_model(saved, tmp_path):
    model, path = saved
    state = convcore.load(path)
    key = next(k for k in state if k.endswith("weight"))
    bad = dict(state, **{key: state[key].astype(np.float16)})
    convcore.save(bad, str(tmp_path / "f16.npz"))
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match=key):
        model.load_state_dict(convcore.load(str(tmp_path / "f16.npz")))
    bad = dict(state, **{key: state[key][:1]})
    convcore.save(bad, str(tmp_path / "shape.npz"))
    with pytest.raises(ValueError, match=key):
        model.load_state_dict(convcore.load(str(tmp_path / "shape.npz")))
    for k, v in model.state_dict().items():          # a failed load changes nothing
        np.testing.assert_array_equal(v, before[k])


def test_save_refuses_objects(tmp_path):
    with pytest.raises(TypeError, match="not a numeric array"):
        convcore.save({"w": np.array([object()])}, str(tmp_path / "x.npz"))


@pytest.mark.parametrize("meta", [
    b"\xff\xfe", b"{not json", b"[1, 2]", b'"text"', b"null",
    b'{"format": "1"}', b'{"format": 1, "rng": [1]}', b'{"format": 1, "optimizer": 3}',
])
def test_hostile_checkpoint_metadata(tmp_path, meta):
    from convcore.training.checkpoint import _META, load_checkpoint, save_checkpoint
    from convcore import optim
    model = nn.Sequential(nn.Linear(3, 2, rng=0))
    opt = optim.SGD(model.parameters(), lr=0.1)
    path = str(tmp_path / "ck.npz")
    save_checkpoint(path, model, opt, epoch=1)
    state = convcore.load(path)
    state[_META] = np.frombuffer(meta, np.uint8)
    convcore.save(state, path)
    before = np.array(model[0].weight.data)
    with pytest.raises(ValueError, match="load_checkpoint: .*(metadata|optimizer)"):
        load_checkpoint(path, model, opt)
    np.testing.assert_array_equal(model[0].weight.data, before)
