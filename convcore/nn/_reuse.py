"""The reuse rule: one module instance, one place in a forward pass.

A layer keeps what its backward needs in itself (Module.save_for_backward),
one forward's worth. The same instance run twice in one forward pass (one
nn.ReLU() written at two places) would keep only the second call's arrays,
and backward would be wrong at the first place. Supporting it would need a
stack of saved states popped in reverse call order, but the containers do
not run backward in reverse call order (Residual runs body then shortcut,
Concat its branches in order), so reuse is refused instead:

- A forward pass is one outermost module call (`model(x)`): calls made
  while it runs belong to it. A new outermost call starts a new pass, so
  a forward that is never followed by backward (evaluation in training
  mode, an aborted step) is simply replaced by the next one.
- Under convcore.no_grad() nothing is saved: reuse is allowed.
- In training mode, the second call of an instance within one pass raises
  RuntimeError at that call, saying why and what to do.
- In eval mode (inference written without no_grad) the second call is
  allowed and the output is right; only that instance's backward is
  refused, until the instance runs again in a new pass.

Fused steps (convcore.nn._fusion) that do not call a module keep their own
saved state per step, so a module shared by two fused steps (one ReLU after
two convolutions) is never run twice and its gradients are right.
"""
import itertools
import threading

from convcore.nn import hooks

_local = threading.local()
# Process-wide, so that two threads' passes never share a number.
_pass_ids = itertools.count(1)
_MARK = "_forward_pass"


def run(module, args, kwargs):
    """module.forward(*args, **kwargs) as part of the current pass (a new
    one if no pass is running on this thread), applying the rule."""
    state = _local.__dict__
    depth = state.get("depth", 0)
    if depth:
        current = state["pass"]
    else:
        current = state["pass"] = next(_pass_ids)
    d = module.__dict__
    if d.get(_MARK) == current:
        _second_call(module)
    elif hooks.REFUSED in d:   # first call of a new pass: backward allowed again
        del d[hooks.REFUSED]
        hooks.refresh(module)
    d[_MARK] = current
    state["depth"] = depth + 1
    try:
        return module.forward(*args, **kwargs)
    finally:
        state["depth"] = depth


def _second_call(module):
    name = type(module).__name__
    if module.training:
        raise RuntimeError(
            f"{name}: this instance already ran in this forward pass (it is used at "
            "two places in the network). It keeps one call's arrays for backward, so "
            f"backward would be wrong: give each place its own instance (e.g. two "
            f"{name}() modules). For inference, run under convcore.no_grad() or in "
            "eval mode")
    module.__dict__[hooks.REFUSED] = (
        f"{name}.backward: this instance ran twice in the last forward pass (it is "
        "used at two places in the network; allowed in eval mode, for inference). "
        "It kept one call's arrays, so backward would be wrong: give each place its "
        f"own instance (e.g. two {name}() modules)")
    hooks.refresh(module)
