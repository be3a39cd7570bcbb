"""Forward and backward hooks on a module, as torch.nn.Module's.

    register_forward_pre_hook(hook)   hook(module, args) -> None or new args
    register_forward_hook(hook)       hook(module, args, output) -> None or new output
    register_full_backward_hook(hook) hook(module, grad_input, grad_output)
                                          -> None or new grad_input

Without an autograd tape there is no graph to attach a hook to, and
containers call their children's backward() directly. So a module with
hooks gets instance attributes `forward` and `backward` (bound methods of
the wrappers below) that run the hooks around the class's own methods:
every caller reaches them, whether Sequential, Residual, Concat, a fused
step falling back or the user. The same instance attributes make the
fused paths of convcore.nn._fusion run that module on its own (they fuse
only modules whose forward/backward are the class's), so no hook is
skipped by fusion. Removing the last hook removes the attributes, and
fusion comes back.

Two differences from torch, both from having no autograd: a hook that
changes the input or the output is not differentiated (backward is the
layer's own; a full backward hook may adjust grad_input to match), and
hooks also fire when `forward`/`backward` are called directly.

The same instance `backward` carries the reuse rule's refusal (a module
run twice in one eval-mode forward, see convcore.nn._reuse): its backward
raises, naming the cause.
"""
from __future__ import annotations

import itertools
import types
import weakref
from typing import Any

import numpy as np

# Per-module stores in the instance __dict__, created on first use (a
# module without hooks pays nothing), named as torch names them.
PRE, FORWARD, BACKWARD = "_forward_pre_hooks", "_forward_hooks", "_backward_hooks"
# The reason backward is refused (set by convcore.nn._reuse), or absent.
REFUSED = "_backward_refused"
# A forward/backward the user had put on the instance before any hook:
# the wrappers call it instead of the class's.
_USER = {"forward": "_user_forward", "backward": "_user_backward"}

# Everything this module puts in an instance __dict__ (a copy of a module's
# attributes into a new module, as convert_sync_batchnorm makes, leaves
# them out: the wrappers are bound to the old module; torch drops hooks there too).
INSTANCE_KEYS = frozenset({"forward", "backward", PRE, FORWARD, BACKWARD, REFUSED}
                          | set(_USER.values()))

_ids = itertools.count()


class RemovableHandle:
    """Returned by the register_*_hook methods; remove() unregisters the
    hook (calling it again does nothing)."""

    def __init__(self, module: Any, store: str) -> None:
        self.id = next(_ids)
        self._module = weakref.ref(module)
        self._store = store

    def remove(self) -> None:
        module = self._module()
        if module is None:
            return
        hooks = module.__dict__.get(self._store)
        if hooks is not None and hooks.pop(self.id, None) is not None:
            refresh(module)


def register(module, store, hook, method):
    """Add `hook` to `module`'s `store` (PRE, FORWARD or BACKWARD)."""
    if not callable(hook):
        raise TypeError(f"{type(module).__name__}.{method}: hook must be callable, "
                        f"got {type(hook).__name__}")
    handle = RemovableHandle(module, store)
    module.__dict__.setdefault(store, {})[handle.id] = hook
    refresh(module)
    return handle


def refresh(module):
    """Install or remove the instance wrappers to match the hooks (and the
    refusal) the module has now."""
    d = module.__dict__
    _install(module, "forward", _hooked_forward, bool(d.get(PRE) or d.get(FORWARD)))
    _install(module, "backward", _hooked_backward, bool(d.get(BACKWARD) or REFUSED in d))


def _install(module, name, wrapper, wanted):
    d = module.__dict__
    current = d.get(name)
    ours = getattr(current, "__func__", None) is wrapper
    if wanted and not ours:
        if current is not None:     # the user's own instance method: keep calling it
            d[_USER[name]] = current
        d[name] = types.MethodType(wrapper, module)
    elif not wanted and ours:
        user = d.pop(_USER[name], None)
        if user is None:
            del d[name]
        else:
            d[name] = user


def _inner(module, name):
    """The forward/backward the wrapper stands in front of."""
    user = module.__dict__.get(_USER[name])
    return user if user is not None else getattr(type(module), name).__get__(module)


def _hooked_forward(module, *args, **kwargs):
    d = module.__dict__
    for hook in tuple(d.get(PRE, {}).values()):
        result = hook(module, args)
        if result is not None:
            args = result if isinstance(result, tuple) else (result,)
    output = _inner(module, "forward")(*args, **kwargs)
    for hook in tuple(d.get(FORWARD, {}).values()):
        result = hook(module, args, output)
        if result is not None:
            output = result
    return output


def _hooked_backward(module, *args, **kwargs):
    d = module.__dict__
    refused = d.get(REFUSED)
    if refused is not None:
        raise RuntimeError(refused)
    grad_x = _inner(module, "backward")(*args, **kwargs)
    hooks = tuple(d.get(BACKWARD, {}).values())
    if not hooks:
        return grad_x
    grad_input, grad_output = (grad_x,), tuple(args)
    for hook in hooks:
        result = hook(module, grad_input, grad_output)
        if result is not None:
            grad_input = _checked_grad_input(module, hook, result, grad_input)
    # A copy: the container may let the layer before overwrite the
    # gradient it receives (fused in-place ReLU masking), and a hook may
    # have kept the array it was shown.
    g = grad_input[0]
    return np.array(g, copy=True) if isinstance(g, np.ndarray) else g


def _checked_grad_input(module, hook, result, grad_input):
    name = f"{type(module).__name__} backward hook {getattr(hook, '__name__', hook)!r}"
    if not isinstance(result, (tuple, list)) or len(result) != len(grad_input):
        raise TypeError(f"{name}: must return None or a tuple of {len(grad_input)} "
                        f"gradient(s) like grad_input, got {type(result).__name__}")
    for new, old in zip(result, grad_input):
        if old is not None and new is not None and np.shape(new) != np.shape(old):
            raise ValueError(f"{name}: returned a gradient of shape {np.shape(new)} "
                             f"for grad_input of shape {np.shape(old)}")
    return tuple(result)


def unchanged_since_forward(module, step_name):
    """Raise if `module`, run inside a fused step, has since gained a hook
    (or a refusal): the fused backward would skip it."""
    d = module.__dict__
    if "forward" in d or "backward" in d:
        refused = d.get(REFUSED)
        if refused is not None:
            raise RuntimeError(refused)
        raise RuntimeError(
            f"{step_name}: {type(module).__name__} got a hook (or its own forward/"
            "backward) after a forward that ran it fused; its backward hook would "
            "be skipped. Register hooks before the forward, then run forward again")
