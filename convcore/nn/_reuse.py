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

Fused steps (convcore.nn._fusion) do the work of modules without calling
them; they apply the same rule (before_fused/after_fused), so whether a
network is accepted never depends on fusion. (The one exception: the
ReLU and last BatchNorm2d a ResNet block fuses with its sum, which keep
nothing of their own there.) A pass is tracked from `module(x)`; calling
`model.forward(x)` directly makes each child call its own pass.
"""
import itertools
import threading

from convcore._runtime.grad_mode import is_grad_enabled
from convcore.nn import hooks


class _PassState(threading.local):
    """This thread's pass: the number of module calls running (depth) and
    the current pass number."""
    depth = 0
    current = 0


_local = _PassState()
# Process-wide, so that two threads' passes never share a number.
_pass_ids = itertools.count(1)
_MARK = "_forward_pass"
_REFUSED = hooks.REFUSED


def run(module, args, kwargs):
    """module.forward(*args, **kwargs) as part of the current pass (a new
    one if no pass is running on this thread), applying the rule."""
    # Runs once per module call: attribute reads on the thread-local and
    # one dict read for the common case (first run in this pass).
    state = _local
    depth = state.depth
    if depth:
        current = state.current
    else:
        current = state.current = next(_pass_ids)
    d = module.__dict__
    if d.get(_MARK) == current or _REFUSED in d:
        _check(module, current)
    d[_MARK] = current
    state.depth = depth + 1
    try:
        return module.forward(*args, **kwargs)
    finally:
        state.depth = depth


def before_fused(modules):
    """A fused step is about to do the work of `modules` without calling
    them: apply the rule to each. Returns the pass for after_fused (None
    outside a pass or under no_grad: nothing to track)."""
    if not _local.depth or not is_grad_enabled():
        return None
    current = _local.current
    for m in modules:
        _check(m, current)
    return current


def after_fused(modules, current):
    """The fused step ran: `modules` ran in pass `current`. (Marked after,
    not before: the step may call one of them itself.)"""
    if current is not None:
        for m in modules:
            m.__dict__[_MARK] = current


def _check(module, current):
    d = module.__dict__
    if d.get(_MARK) == current:
        _second_call(module)
    elif _REFUSED in d:   # first run in a new pass: backward allowed again
        del d[_REFUSED]
        hooks.refresh(module)


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
