"""Module: the base of every layer and container (floor 3).

There is no autograd tape. A layer's forward computes its output through
convcore.functional and, unless `convcore.no_grad()` is active, keeps what
its own backward needs (save_for_backward; backward reads saved_tensors);
`backward(grad_y)` turns the output gradient into the input gradient,
adding parameter gradients into `Parameter.grad`. Containers route
gradients between their children in reverse order. One instance serves one
place in a forward pass (convcore.nn._reuse); hooks: convcore.nn.hooks;
checking a backward: convcore.testing.gradcheck.

Parameters, buffers and children are registered by attribute assignment,
as in PyTorch, so `state_dict()` keys follow PyTorch's names
("features.0.weight", "bn.running_mean", ...).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import (Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional,
                    Set, Tuple, TypeVar)

import numpy as np
from numpy.typing import DTypeLike

from convcore._runtime.grad_mode import _state as _grad_state
from convcore.nn import _reuse, _state_keys, _summary, hooks
from convcore.nn.parameter import Parameter
from convcore.utils.types import Array


class IncompatibleKeys(NamedTuple):
    """What a load_state_dict(strict=False) did not match, as torch returns."""

    missing_keys: List[str]
    unexpected_keys: List[str]


# the type of self, for the methods that return it (train, eval, to, ...)
_M = TypeVar("_M", bound="Module")


class Module:
    """Base class: subclasses implement forward() and backward()."""

    #: a network's first layer needs no input gradient; Conv2d and Linear
    #: skip computing it when this is True (set it on the instance), and a
    #: Sequential starting with it stops its backward at the first layer
    #: that has trainable parameters (the rest is frozen, see containers).
    first_layer: bool = False
    training: bool
    # Parameter / ndarray / Module, or None for a declared but absent one;
    # typed Any because the layers and containers read them where they know
    # they are set.
    _parameters: Dict[str, Any]
    _buffers: Dict[str, Any]
    _modules: Dict[str, Any]

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_cache", None)

    # -- registration -------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call Module.__init__() "
                                 "before assigning attributes")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            buffers.pop(name, None)
            modules.pop(name, None)
            self.__dict__.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            buffers.pop(name, None)
            self.__dict__.pop(name, None)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"{type(self).__name__}: cannot assign "
                                f"{type(value).__name__} to parameter '{name}' "
                                "(use a Parameter or None)")
            params[name] = None
        elif name in buffers:
            buffers[name] = value
        elif name in modules:
            if value is not None:
                raise TypeError(f"{type(self).__name__}: cannot assign "
                                f"{type(value).__name__} to child module '{name}'")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: parameters, buffers and
        # children live in their own dicts. Layers' forward/backward read
        # self._parameters directly on their hot paths.
        d = self.__dict__
        try:
            if name in d["_parameters"]:
                return d["_parameters"][name]
            if name in d["_buffers"]:
                return d["_buffers"][name]
            if name in d["_modules"]:
                return d["_modules"][name]
        except KeyError:  # before Module.__init__
            pass
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Optional[Parameter]) -> None:
        """Register a Parameter (or None: a declared but absent parameter,
        such as the bias of a bias=False layer, with no state_dict key)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: '{name}' must be a Parameter or "
                            f"None, got {type(param).__name__}")
        self._parameters[name] = param

    def register_buffer(self, name: str, array: Optional[Array]) -> None:
        """Register a non-trainable array saved in the state dict (e.g.
        BatchNorm's running_mean); None declares it absent."""
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"register_buffer: '{name}' must be an ndarray or None, "
                            f"got {type(array).__name__}")
        self.__dict__.pop(name, None)
        self._buffers[name] = array

    #: bumped by bump_buffers(): buffers (e.g. BatchNorm's running
    #: statistics) were written in place by load_state_dict or
    #: reset_running_stats; caches derived from them compare it.
    buffers_version: int = 0

    def bump_buffers(self) -> None:
        """Mark this module's buffers as changed in place."""
        object.__setattr__(self, "buffers_version", self.buffers_version + 1)

    def add_module(self, name: str, module: Optional[Module]) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: '{name}' must be a Module, got "
                            f"{type(module).__name__}")
        self._modules[str(name)] = module

    # -- running ------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # _summary.active_recorder(), inlined: this runs once per layer call.
        # The thread-local's own dict: getattr with a default raises and
        # catches an AttributeError whenever the attribute is absent, ten
        # times the cost of a dict lookup.
        recorder = _summary._local.__dict__.get("recorder")
        if recorder is not None and not self._modules:
            return recorder.record(self, *args, **kwargs)
        if not _grad_state.__dict__.get("enabled", True):
            return self.forward(*args, **kwargs)   # nothing is saved: reuse is free
        # One instance, one place per forward pass: convcore.nn._reuse.
        return _reuse.run(self, args, kwargs)

    def _input_grad_needed(self) -> bool:
        """Whether this backward must compute the input gradient: not for a
        first layer, nor when the container running the backward said that
        nothing before this module needs it (skip_input_grad_once: one
        backward only). Call it once per backward."""
        return not (self.__dict__.pop("_skip_input_grad", False) or self.first_layer)

    def skip_input_grad_once(self) -> None:
        """Tell this module that its next backward may skip the input
        gradient (and return None): containers call it on the first layer
        that still has trainable parameters, everything before it frozen."""
        self.__dict__["_skip_input_grad"] = True

    # -- what backward needs (the custom-layer API) ---------------------------
    def save_for_backward(self, *values: Any) -> None:
        """Keep `values` (arrays, shapes, flags: anything) for this module's
        backward, as torch's ctx.save_for_backward. Call it in forward.

        Kept: references, not copies (do not write into a kept array
        afterwards). Nothing is kept under `convcore.no_grad()`, in train and
        eval mode alike (inference memory). A new call replaces what an
        earlier forward kept, so a forward never followed by backward (an
        evaluation, an aborted step) leaves nothing behind but its own
        arrays. Released when backward reads `saved_tensors`.
        """
        # Straight into __dict__ (what __setattr__ does for a plain
        # attribute) and is_grad_enabled() inlined, reading the thread-local's
        # dict as __call__ does: once per layer call.
        enabled = _grad_state.__dict__.get("enabled", True)
        self.__dict__["_cache"] = values if enabled else None

    @property
    def saved_tensors(self) -> Tuple[Any, ...]:
        """The tuple forward gave save_for_backward; read it once in backward.
        Reading releases it, so the memory goes with the step; a backward
        without a forward since the last one (or after a forward under
        `convcore.no_grad()`) raises RuntimeError saying so."""
        cache = self.__dict__.get("_cache")
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: nothing saved for backward; call "
                "forward first (outside convcore.no_grad()), once per backward")
        self.__dict__["_cache"] = None
        return cache

    # The names the layers have always used.
    _save_for_backward = save_for_backward

    def _saved(self) -> Tuple[Any, ...]:
        return self.saved_tensors

    # -- hooks (convcore.nn.hooks) --------------------------------------------
    def register_forward_pre_hook(self, hook: Callable[..., Any]) -> hooks.RemovableHandle:
        """hook(module, args) -> None or new args (a tuple, or one value),
        called before forward. Returns a handle; handle.remove() unregisters."""
        return hooks.register(self, hooks.PRE, hook, "register_forward_pre_hook")

    def register_forward_hook(self, hook: Callable[..., Any]) -> hooks.RemovableHandle:
        """hook(module, args, output) -> None or a new output, called after
        forward. Returns a handle; handle.remove() unregisters."""
        return hooks.register(self, hooks.FORWARD, hook, "register_forward_hook")

    def register_full_backward_hook(self, hook: Callable[..., Any]
                                    ) -> hooks.RemovableHandle:
        """hook(module, grad_input, grad_output) -> None or a new grad_input,
        called after backward: grad_input is (grad_x,) as backward returns it
        (None when not computed), grad_output the tuple of backward's
        arguments. Register it before the forward whose backward it should
        see. Returns a handle; handle.remove() unregisters. A module with
        hooks runs unfused (see convcore.nn.hooks)."""
        return hooks.register(self, hooks.BACKWARD, hook, "register_full_backward_hook")

    # -- traversal ----------------------------------------------------------
    def named_children(self) -> Iterator[Tuple[str, Module]]:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "", _seen: Optional[Set[int]] = None
                      ) -> Iterator[Tuple[str, Module]]:
        """(qualified name, module) for self and every descendant, once each."""
        seen = set() if _seen is None else _seen
        if id(self) in seen:
            return
        seen.add(id(self))
        yield prefix, self
        for name, m in self.named_children():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name, seen)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True
                         ) -> Iterator[Tuple[str, Parameter]]:
        """(qualified name, Parameter), each parameter once even if shared."""
        seen: Set[int] = set()
        mods: Any = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, m in mods:
            for pname, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse: bool = True) -> List[Parameter]:
        """List of this module's Parameters (each once)."""
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def named_buffers(self, prefix: str = "") -> Iterator[Tuple[str, Array]]:
        for mname, m in self.named_modules(prefix):
            for bname, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

    def buffers(self) -> List[Array]:
        return [b for _, b in self.named_buffers()]

    def apply(self: _M, fn: Callable[[Module], Any]) -> _M:
        """Call fn(module) on every descendant, then self; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # -- modes and gradients ------------------------------------------------
    def train(self: _M, mode: bool = True) -> _M:
        """Training mode: dropout drops, batch norm uses and updates batch
        statistics. Returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self: _M) -> _M:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            p.zero_grad(set_to_none)

    def requires_grad_(self: _M, requires_grad: bool = True) -> _M:
        """Freeze (False) or unfreeze every parameter; returns self."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def to(self: _M, dtype: DTypeLike) -> _M:
        """Convert every parameter (and its gradient) and every float buffer
        to float32 or float64 in place; returns self. Layers created with
        dtype= need no conversion; this is for a model loaded in the other
        precision."""
        from convcore.nn._common import layer_dtype
        dt = layer_dtype(dtype, f"{type(self).__name__}.to")
        for m in self.modules():
            for name, p in m._parameters.items():
                if p is not None and p.dtype != dt:
                    p.data = p.data.astype(dt)
                    if p.grad is not None:
                        p.grad = p.grad.astype(dt)
            for name, b in m._buffers.items():
                if b is not None and b.dtype.kind == "f" and b.dtype != dt:
                    m._buffers[name] = b.astype(dt)
            m._cache = None  # cached arrays are in the old precision
        return self

    # -- state --------------------------------------------------------------
    def _state_items(self) -> Iterator[Tuple[str, Module, str, str]]:
        """(key, owner module, local name, kind) in PyTorch's state-dict order:
        each module's parameters, then its buffers, then its children."""
        for mname, m in self.named_modules():
            pre = f"{mname}." if mname else ""
            for name, p in m._parameters.items():
                if p is not None:
                    yield pre + name, m, name, "parameter"
            for name, b in m._buffers.items():
                if b is not None:
                    yield pre + name, m, name, "buffer"

    #: a function renaming a foreign state dict's keys to this module's,
    #: tried by load_state_dict when the keys do not match (the zoo's
    #: models set convcore.models.torchvision_keys); None: no renaming.
    state_dict_key_map: Optional[Callable[..., Any]] = None

    def state_dict(self) -> Dict[str, Array]:
        """OrderedDict key -> ndarray (copies), with PyTorch's key names."""
        out: Dict[str, Array] = OrderedDict()
        for key, m, name, kind in self._state_items():
            arr = m._parameters[name].data if kind == "parameter" else m._buffers[name]
            out[key] = np.array(arr, copy=True)
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True
                        ) -> IncompatibleKeys:
        """Copy arrays from `state_dict` (key -> array; torch tensors are
        converted with numpy.asarray) into this module.

        Every key is checked before anything is written, so a failed load
        leaves the module unchanged. With strict=True a missing or unexpected
        key raises ValueError naming a few and the counts; with strict=False
        matching keys load and the rest are returned as (missing_keys,
        unexpected_keys). Keys that do not match are first renamed by
        `state_dict_key_map` when one is set and that makes them match (the
        zoo's models: torchvision's keys). A shape mismatch raises
        ValueError, a dtype mismatch TypeError, naming the key.
        """
        fn = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"{fn}: expected a mapping key -> array, got "
                            f"{type(state_dict).__name__}")
        targets = {key: (m, name, kind) for key, m, name, kind in self._state_items()}
        state_dict, missing, unexpected = _state_keys.match_keys(self, targets, state_dict)
        if strict and (missing or unexpected):
            raise ValueError(_state_keys.mismatch_message(fn, missing, unexpected))
        plan = []
        for key, (m, name, kind) in targets.items():
            if key not in state_dict:
                continue
            src = np.asarray(state_dict[key])
            dst = m._parameters[name].data if kind == "parameter" else m._buffers[name]
            if src.shape != dst.shape:
                raise ValueError(f"{fn}: '{key}' has shape {src.shape} but the "
                                 f"model expects {dst.shape}")
            if dst.dtype.kind == "f":
                ok = src.dtype == dst.dtype
            else:  # integer counters such as num_batches_tracked
                ok = src.dtype.kind in "iu"
            if not ok:
                raise TypeError(f"{fn}: '{key}' has dtype {src.dtype} but the "
                                f"model expects {dst.dtype} (shape {dst.shape})")
            plan.append((dst, src, m, name, kind))
        for dst, src, m, name, kind in plan:
            np.copyto(dst, src, casting="unsafe")
            # Written in place: tell caches derived from these arrays.
            if kind == "parameter":
                m._parameters[name].bump()
            else:
                m.bump_buffers()
        return IncompatibleKeys(missing, unexpected)

    # -- shapes and cost, for summary() -------------------------------------
    def output_shape(self, input_shape: Tuple[int, ...]) -> Optional[Tuple[int, ...]]:
        """Output shape for an input of `input_shape` (batch included), or
        None when unknown (summary() then runs forward on zeros)."""
        return None

    def macs(self, input_shape: Tuple[int, ...], output_shape: Tuple[int, ...]) -> int:
        """Multiply-adds of one forward pass; only weight layers count."""
        return 0

    def summary(self, input_shape: Tuple[int, ...], dtype: DTypeLike = np.float32
                ) -> _summary.Summary:
        """Per-layer output shape, parameter count and multiply-adds for one
        sample of `input_shape` (without the batch dimension, e.g. (3, 224,
        224)). Nothing is computed for layers that know their output shape,
        so it is cheap even for VGG-16. Returns a Summary whose str() is
        the table and which has .rows, .total_params, .trainable_params,
        .total_macs and .total_flops (= 2 x multiply-adds)."""
        return _summary.summarize(self, tuple(input_shape), dtype)

    # -- printing -----------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ")
                 for name, m in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"
