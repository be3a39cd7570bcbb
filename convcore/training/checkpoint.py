"""Training checkpoints: everything a run needs to continue exactly, in one
.npz written by convcore.save (arrays only, never a pickle).

    model.<key>                  the model's state_dict (parameters, BN buffers)
    optimizer.<i>.<name>         array state of parameter i (momentum, Adam moments)
    __checkpoint__               uint8 bytes of a JSON document with everything
                                 else: epochs done, history, optimizer param
                                 groups and scalar state (Adam's step), scheduler
                                 state, the bit-generator states of the model's
                                 random layers (dropout), callbacks' state

JSON keeps the small, structured part readable and pickle-free; Python's
json writes inf/nan (ReduceLROnPlateau's initial best) and big integers
(PCG64 states) exactly.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from convcore.serialization import load, save
from convcore.utils.types import PathLike

_META = "__checkpoint__"
_FORMAT = 1


def _jsonable(value, where):
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"save_checkpoint: cannot store {type(value).__name__} in {where}")


def random_layers(model: Any) -> Iterator[Tuple[str, np.random.Generator]]:
    """(qualified name, numpy Generator) of every layer holding an `rng`
    (Dropout): their states make a resumed run draw the same masks."""
    for name, m in model.named_modules():
        rng = m.__dict__.get("rng")
        if isinstance(rng, np.random.Generator):
            yield name, rng


def save_checkpoint(path: PathLike, model: Any, optimizer: Any = None, scheduler: Any = None, *,
                    epoch: int = 0, history: Optional[Mapping[str, Any]] = None,
                    extra: Optional[Mapping[str, Any]] = None) -> None:
    """Write model, optimizer and scheduler state after `epoch` completed
    epochs, with the training history and a JSON-able `extra` mapping."""
    arrays = OrderedDict((f"model.{k}", v) for k, v in model.state_dict().items())
    meta = {"format": _FORMAT, "epoch": int(epoch),
            "history": _jsonable(dict(history or {}), "history"),
            "extra": _jsonable(dict(extra or {}), "extra"),
            "rng": {name: _jsonable(g.bit_generator.state, "rng")
                    for name, g in random_layers(model)}}
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars: Dict[str, Dict[str, Any]] = {}
        for i, state in sd["state"].items():
            for name, value in state.items():
                if isinstance(value, np.ndarray) and value.ndim:
                    arrays[f"optimizer.{i}.{name}"] = value
                else:
                    scalars.setdefault(str(i), {})[name] = _jsonable(value, "optimizer state")
        meta["optimizer"] = {"type": type(optimizer).__name__,
                             "param_groups": _jsonable(sd["param_groups"], "param_groups"),
                             "scalars": scalars}
    if scheduler is not None:
        meta["scheduler"] = {"type": type(scheduler).__name__,
                             "state": _jsonable(scheduler.state_dict(), "scheduler state")}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    save(arrays, path)


def load_checkpoint(path: PathLike, model: Any, optimizer: Any = None, scheduler: Any = None
                    ) -> Dict[str, Any]:
    """Restore what save_checkpoint wrote into the given objects (built the
    same way as when saving) and return the metadata dict: "epoch" (epochs
    done), "history", "extra". A file that is not a checkpoint, or saved
    with a different optimizer/scheduler type, raises ValueError."""
    fn = "load_checkpoint"
    arrays = load(path)
    if _META not in arrays:
        raise ValueError(f"{fn}: {path} is a convcore state file but not a training "
                         f"checkpoint (no '{_META}' entry)")
    try:  # a hostile or corrupt file: bad UTF-8, bad JSON, the wrong structure
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except ValueError as e:
        raise ValueError(f"{fn}: {path} has unreadable checkpoint metadata ({e})") from e
    if (not isinstance(meta, dict) or type(meta.get("format", 0)) is not int
            or not all(isinstance(meta.get(k, {}), dict)
                       for k in ("rng", "history", "extra", "optimizer", "scheduler"))):
        raise ValueError(f"{fn}: {path} has malformed checkpoint metadata")
    if meta.get("format", 0) > _FORMAT:
        raise ValueError(f"{fn}: {path} has checkpoint format {meta['format']}; this "
                         f"convcore reads up to {_FORMAT}")
    model_sd = OrderedDict((k[6:], v) for k, v in arrays.items() if k.startswith("model."))
    if optimizer is not None:
        saved = meta.get("optimizer")
        if saved is None or saved["type"] != type(optimizer).__name__:
            raise ValueError(f"{fn}: {path} holds {saved and saved['type']} optimizer "
                             f"state, not {type(optimizer).__name__}")
    if scheduler is not None:
        saved = meta.get("scheduler")
        if saved is None or saved["type"] != type(scheduler).__name__:
            raise ValueError(f"{fn}: {path} holds {saved and saved['type']} scheduler "
                             f"state, not {type(scheduler).__name__}")
    model.load_state_dict(model_sd)
    if optimizer is not None:
        saved = meta["optimizer"]
        state: Dict[int, Dict[str, Any]] = {}
        for key, value in arrays.items():
            if key.startswith("optimizer."):
                _, i, name = key.split(".", 2)
                state.setdefault(int(i), {})[name] = value
        for i, scalars in saved["scalars"].items():
            state.setdefault(int(i), {}).update(scalars)
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    if scheduler is not None:
        scheduler.load_state_dict(meta["scheduler"]["state"])
    generators = dict(random_layers(model))
    for name, rng_state in meta.get("rng", {}).items():
        if name in generators:
            generators[name].bit_generator.state = rng_state
    return meta
