"""convcore.save / convcore.load: state dicts as .npz, never pickles.

A state dict is a flat mapping name -> array, which .npz stores natively;
loading with allow_pickle=False means a file can never run code. Files
written here carry a format marker so a foreign .npz is told apart."""
from __future__ import annotations

import math
import os
import zipfile
from collections import OrderedDict
from typing import IO, Any, Dict, Mapping, Optional, Union

import numpy as np

from convcore.utils.types import PathLike

_MARKER = "__convcore_state_dict__"
_VERSION = 1


def save(obj: Union[Any, Mapping[str, Any]], path: PathLike) -> None:
    """Write a Module's state_dict() (or a mapping name -> array) to `path`
    as an uncompressed .npz (the name is used exactly as given)."""
    state = obj.state_dict() if hasattr(obj, "state_dict") and callable(obj.state_dict) else obj
    if not hasattr(state, "items"):
        raise TypeError(f"convcore.save: expected a Module or a mapping name -> array, "
                        f"got {type(obj).__name__}")
    arrays: Dict[str, Any] = OrderedDict()
    for key, value in state.items():
        if not isinstance(key, str) or key == _MARKER:
            raise ValueError(f"convcore.save: invalid key {key!r} (keys must be strings)")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise TypeError(f"convcore.save: '{key}' is not a numeric array (dtype "
                            f"{arr.dtype}); only arrays can be stored without pickle")
        arrays[key] = arr
    arrays[_MARKER] = np.array(_VERSION, dtype=np.int64)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# What a state dict may hold: bools, ints, floats (no objects, strings,
# records: nothing a model's arrays are made of, and objects need pickle).
_NUMERIC_KINDS = "biuf"


def _check_entries(archive, path):
    """Read every entry's .npy header (never its data) and refuse what
    cannot be a state dict before numpy allocates: non-numeric dtypes, and
    shapes whose byte count is not what the entry holds (a truncated entry,
    or a header declaring terabytes to make the reader allocate them)."""
    for info in archive.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"convcore.load: {path}: entry '{name}' has .npy "
                                 f"format version {version}, not 1.0 or 2.0")
            header = f.tell()
        if dtype.hasobject or dtype.kind not in _NUMERIC_KINDS or dtype.fields:
            raise ValueError(f"convcore.load: {path}: entry '{name}' has dtype "
                             f"{dtype}; a state dict holds numeric arrays only "
                             "(object arrays would need pickle, which is never used)")
        declared = math.prod(shape) * dtype.itemsize
        if declared != info.file_size - header:
            raise ValueError(f"convcore.load: {path}: entry '{name}' declares shape "
                             f"{shape} of {dtype} ({declared} bytes) but holds "
                             f"{info.file_size - header} bytes: truncated or corrupt")


# What to do with a PyTorch file instead: convcore never unpickles, and
# load_state_dict takes the arrays (mapping torchvision key names).
_TORCH_HINT = ("convcore never unpickles; read it with PyTorch and pass the state dict "
               "on: sd = torch.load(path, map_location='cpu', weights_only=True); "
               "model.load_state_dict({k: v.numpy() for k, v in sd.items()})")


def _pytorch_file_kind(path: object) -> Optional[str]:
    """"a PyTorch (torch.save) zip archive", "a pickle (PyTorch's legacy
    torch.save format, or pickle.dump)" or None, from the first bytes and
    the zip directory; never unpickles. Only paths are inspected."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(2)
    # Pickle protocol 2+ opens with PROTO (0x80) and the protocol number.
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a pickle (PyTorch's legacy torch.save format, or pickle.dump)"
    if head == b"PK":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return None
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "a PyTorch (torch.save) zip archive"
    return None


def load(path: Union[PathLike, IO[bytes]]) -> "OrderedDict[str, np.ndarray]":
    """Read a file written by convcore.save -> OrderedDict name -> ndarray,
    ready for Module.load_state_dict. A truncated, corrupt or foreign file
    raises ValueError saying which (for a PyTorch .pt/.pth file, how to load
    it instead)."""
    kind = _pytorch_file_kind(path)
    if kind is not None:
        raise ValueError(f"convcore.load: {path} is {kind}, not a convcore .npz file; "
                         f"{_TORCH_HINT}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):  # an ndarray has no context manager
            raise ValueError(f"convcore.load: {path} holds a single .npy array, "
                             "not a convcore state dict (.npz)")
        with loaded as npz:
            names = list(npz.files)
            if _MARKER not in names:
                raise ValueError(f"convcore.load: {path} is an .npz file not written "
                                 f"by convcore.save (no '{_MARKER}' entry)")
            _check_entries(npz.zip, path)
            version = int(npz[_MARKER])
            if version > _VERSION:
                raise ValueError(f"convcore.load: {path} has format version {version}; "
                                 f"this convcore reads up to {_VERSION}")
            return OrderedDict((k, npz[k]) for k in names if k != _MARKER)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"convcore.load: {path} is truncated or not a convcore "
                         f".npz file ({type(e).__name__}: {e})") from e
    except ValueError as e:
        if str(e).startswith("convcore.load"):
            raise
        raise ValueError(f"convcore.load: {path} is truncated or not a convcore "
                         f".npz file ({e})") from e
