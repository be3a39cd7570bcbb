"""Optimizer base: parameter groups, per-parameter state, state_dict.

As in torch, `params` is an iterable of Parameters or of dicts
{"params": [...], "lr": ...} (parameter groups with their own settings).
A parameter that is frozen (requires_grad False) or has no gradient yet
is skipped by step()."""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from convcore._runtime.threads import kernel_threads
from convcore.nn.parameter import Parameter

# What an optimizer takes: Parameters, or parameter groups (dicts with
# "params" and their own settings), as torch.
Params = Union[Iterable[Parameter], Iterable[Dict[str, Any]]]


def one_pass(p: Parameter, *state: np.ndarray) -> Optional[Tuple[Any, ...]]:
    """(threads, 1-D views of p.data, p.grad and `state`) for the one-pass
    updates of convcore._kernels.optim, or None when the arrays cannot
    take them (a gradient of another dtype or shape, an array that is not
    C-contiguous or not writable); the optimizer then runs its NumPy
    expressions, which give the same result."""
    data, grad = p.data, p.grad
    if grad is None:
        return None
    arrays = (data, grad) + state
    for a in arrays:
        if (type(a) is not np.ndarray or a.dtype != data.dtype or a.shape != data.shape
                or not a.flags.c_contiguous):
            return None
    if not (data.flags.writeable and all(a.flags.writeable for a in state)):
        return None
    return (kernel_threads(data.size),) + tuple(a.reshape(-1) for a in arrays)


class Optimizer:
    def __init__(self, params: Params, defaults: Dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state: Dict[int, Dict[str, Any]] = {}   # id(Parameter) -> arrays / numbers
        self.param_groups: List[Dict[str, Any]] = []
        given: List[Any] = list(params)
        if not given:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = given if isinstance(given[0], dict) else [{"params": given}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group: Dict[str, Any]) -> None:
        group = dict(group)
        ps = group["params"]
        ps = [ps] if isinstance(ps, Parameter) else list(ps)
        for p in ps:
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__}: expected Parameters, got "
                                f"{type(p).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in ps):
            raise ValueError(f"{type(self).__name__}: a parameter appears in more "
                             "than one group")
        group["params"] = ps
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group):
        if group["lr"] < 0:
            raise ValueError(f"{type(self).__name__}: invalid lr {group['lr']}")
        if group.get("weight_decay", 0.0) < 0:
            raise ValueError(f"{type(self).__name__}: invalid weight_decay "
                             f"{group['weight_decay']}")

    def _params_with_grad(self, group):
        """Trainable parameters that received a gradient. Each is marked
        changed (Parameter.bump) as it is handed out, since step() updates
        its .data in place; caches keyed on Parameter.version (folded batch
        norm, transformed weights) then recompute."""
        for p in group["params"]:
            if p.requires_grad and p.grad is not None:
                p.bump()
                yield p, self.state.setdefault(id(p), {})

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.zero_grad(set_to_none)

    def step(self) -> None:
        raise NotImplementedError

    # -- state ------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """{"state": {index: {name: value}}, "param_groups": [{..., "params":
        [index, ...]}]}, parameters numbered across groups in order, as torch."""
        index, groups, n = {}, [], 0
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index[id(p)] = n
                ids.append(n)
                n += 1
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        state = {index[pid]: copy.deepcopy(s) for pid, s in self.state.items() if pid in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved parameter "
                             "groups do not match this optimizer's")
        params = {}
        for saved, own in zip(groups, self.param_groups):
            for i, p in zip(saved["params"], own["params"]):
                params[i] = p
            own.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            s = copy.deepcopy(s)
            for k, v in s.items():
                if isinstance(v, np.ndarray) and v.shape != p.shape and v.ndim:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: state "
                                     f"'{k}' of parameter {i} has shape {v.shape}, "
                                     f"parameter has {p.shape}")
                if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                    s[k] = v.astype(p.dtype)
            self.state[id(p)] = s

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in g.items() if k != "params"]
        return "\n".join(lines) + "\n)"
