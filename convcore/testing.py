"""Gradient checking for layers written by hand (floor 3, beside nn).

Without autograd every backward is written by hand, so every custom layer
needs its backward checked against the forward. gradcheck does what
torch.autograd.gradcheck does, in float64, by central differences:

    f(x, params) = sum(forward(x) * u)      u: a fixed random output gradient
    analytic     backward(u) -> grad_x, and each Parameter's .grad
    numeric      (f(.. + eps e_i ..) - f(.. - eps e_i ..)) / 2 eps

Every element is probed for arrays of up to `full_size` elements;
larger ones are checked along random directions (one directional
derivative checks every component at once, Chainer's check_backward) and
at a few random elements.
"""
from __future__ import annotations

from typing import Any, Callable, Tuple, Union

import numpy as np

from convcore._runtime.grad_mode import no_grad
from convcore.nn.module import Module

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """A backward that disagrees with finite differences of its forward."""


def gradcheck(layer_or_fn: Union[Module, Tuple[Callable[..., Any], Callable[..., Any]]],
              inputs: Any, *, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              check_params: bool = True, full_size: int = 256, seed: int = 0) -> bool:
    """Check a backward against central differences of its forward.

    Parameters
    ----------
    layer_or_fn : Module, or a pair (forward, backward) of functions
        A Module is run as `layer(*inputs)` then `layer.backward(u)`; its
        gradient with respect to inputs[0] (the only one a layer's backward
        returns; later inputs, such as a loss's target, are constants) and,
        with check_params, every trainable Parameter's gradient are checked.
        The pair: `forward(*inputs) -> y`, `backward(u, *inputs) -> ` one
        gradient per input (a single array for one input; None skips one).
    inputs : ndarray or tuple of them (and other constants)
        Float arrays are copied to float64, so float32 inputs are promoted;
        a Module runs in float64 for the check (its parameters and buffers
        converted, then restored). Integer arrays are passed as they are.
    eps, atol, rtol : the step and the tolerance |analytic - numeric| <=
        atol + rtol * |numeric|.
    check_params : also check the parameters' gradients (Modules only).
    full_size : arrays of up to this many elements are checked element by
        element; larger ones along 2 random directions and at 8 elements.
    seed : for the output gradient u, the directions and the elements.

    Returns True, or raises GradcheckError naming the input or parameter,
    the index (or "random direction") and both values, or saying that
    forward wrote into an input or backward into the output gradient. The caller's arrays
    are not modified; the module's parameters, gradients (.grad), buffers
    (batch norm's running statistics) and train/eval mode are as before.
    The layer must be deterministic: Dropout in training mode is not.
    """
    if isinstance(layer_or_fn, Module):
        return _check_module(layer_or_fn, _promote(inputs), eps, atol, rtol,
                             check_params, full_size, np.random.default_rng(seed))
    if not (isinstance(layer_or_fn, (tuple, list)) and len(layer_or_fn) == 2
            and all(map(callable, layer_or_fn))):
        raise TypeError("gradcheck: layer_or_fn must be a convcore Module or a pair "
                        f"(forward, backward) of functions, got {type(layer_or_fn).__name__}")
    return _check_functions(*layer_or_fn, _promote(inputs), eps, atol, rtol,
                            full_size, np.random.default_rng(seed))


def _promote(inputs):
    """Float64 copies of the float arrays, as a tuple."""
    if not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    out = []
    for a in inputs:
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            a = np.array(a, dtype=np.float64, copy=True)
        out.append(a)
    return tuple(out)


def _as_output(y, what):
    y = np.asarray(y)
    if y.dtype != np.float64:
        raise TypeError(f"gradcheck: {what} returned {y.dtype} for float64 inputs; finite "
                        "differences need float64 (eps is below float32 resolution), so "
                        "the forward must follow its input's dtype")
    return y


def _untouched(call, labelled, what):
    """call(), checking that it leaves the (label, array) pairs `labelled`
    (its inputs, the output gradient) as they were: a layer must not write
    into arrays it was given."""
    copies = [(label, a, a.copy()) for label, a in labelled if isinstance(a, np.ndarray)]
    result = call()
    for label, a, before in copies:
        if not np.array_equal(a, before, equal_nan=True):
            raise GradcheckError(f"gradcheck: {what} modified {label} it was given "
                                 f"(shape {a.shape}); work on a copy")
    return result


def _inputs(arrays):
    return [(f"input {i}", a) for i, a in enumerate(arrays)]


def _compare(name, analytic, perturbed_loss, base, eps, atol, rtol, full_size, rng):
    """Compare `analytic` (the gradient at `base`) with central differences
    of perturbed_loss(array like base) -> float."""
    if analytic is None:
        raise GradcheckError(f"gradcheck: {name}: backward gave no gradient")
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != base.shape:
        raise GradcheckError(f"gradcheck: {name}: gradient of shape {analytic.shape}, "
                             f"expected {base.shape}")
    if base.size <= full_size:
        probes = [(np.unravel_index(i, base.shape), None) for i in range(base.size)]
    else:
        picks = rng.choice(base.size, size=8, replace=False)
        probes = [("random direction", rng.standard_normal(base.shape)) for _ in range(2)]
        probes += [(np.unravel_index(i, base.shape), None) for i in picks]
    for index, direction in probes:
        if direction is None:
            direction = np.zeros(base.shape)
            direction[index] = 1.0
        numeric = (perturbed_loss(base + eps * direction)
                   - perturbed_loss(base - eps * direction)) / (2 * eps)
        value = float(np.sum(analytic * direction))
        if not abs(value - numeric) <= atol + rtol * abs(numeric):
            where = index if isinstance(index, str) else tuple(int(i) for i in index)
            raise GradcheckError(f"gradcheck: {name} at {where}: analytic {value!r} vs "
                                 f"numeric {numeric!r} (atol={atol}, rtol={rtol})")
    return True


def _check_functions(forward, backward, inputs, eps, atol, rtol, full_size, rng):
    y = _untouched(lambda: _as_output(forward(*inputs), "forward"), _inputs(inputs),
                   "forward")
    u = rng.standard_normal(y.shape)
    grads = _untouched(lambda: backward(u, *inputs),
                       [("the output gradient", u)] + _inputs(inputs), "backward")
    if len(inputs) == 1 and not isinstance(grads, (tuple, list)):
        grads = (grads,)
    if len(grads) != len(inputs):
        raise GradcheckError(f"gradcheck: backward returned {len(grads)} gradients "
                             f"for {len(inputs)} inputs")
    for i, (a, g) in enumerate(zip(inputs, grads)):
        if g is None or not (isinstance(a, np.ndarray) and a.dtype == np.float64):
            continue

        def loss(value, i=i):
            args = list(inputs)
            args[i] = value
            return float(np.sum(_as_output(forward(*args), "forward") * u))
        _compare(f"input {i}", g, loss, a, eps, atol, rtol, full_size, rng)
    return True


def _check_module(module, inputs, eps, atol, rtol, check_params, full_size, rng):
    kept = _Snapshot(module)
    try:
        module.to(np.float64)
        x, rest = inputs[0], inputs[1:]
        params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        for _, p in params:
            p.grad = None
        name = type(module).__name__
        y = _untouched(lambda: _as_output(module(x, *rest), f"{name}.forward"),
                       _inputs(inputs), f"{name}.forward")
        u = rng.standard_normal(y.shape)
        grad_x = _untouched(lambda: module.backward(u), [("the output gradient", u)],
                            f"{name}.backward")

        def loss(value=None, param=None):
            if param is not None:
                base, param.data = param.data, value
            try:
                with no_grad():
                    out = module(x if param is not None else value, *rest)
                return float(np.sum(_as_output(out, "forward") * u))
            finally:
                if param is not None:
                    param.data = base

        if grad_x is not None and isinstance(x, np.ndarray) and x.dtype == np.float64:
            _compare("input 0", grad_x, loss, x, eps, atol, rtol, full_size, rng)
        if check_params:
            for name, p in params:
                _compare(f"parameter '{name}'", p.grad,
                         lambda v, p=p: loss(v, p), p.data, eps, atol, rtol, full_size, rng)
    finally:
        kept.restore()
    return True


class _Snapshot:
    """A module's parameters (arrays and .grad) and buffers, put back as
    they were: the same array objects with the same values."""

    def __init__(self, module):
        self.params = [(p, p.data, p.grad, None if p.grad is None else p.grad.copy())
                       for p in module.parameters()]
        self.buffers = [(m, name, b, b.copy()) for m in module.modules()
                        for name, b in m._buffers.items() if b is not None]
        self.modules = list(module.modules())

    def restore(self):
        for p, data, grad, grad_values in self.params:
            p.data = data
            p.grad = grad
            if grad is not None:
                np.copyto(grad, grad_values)
        for m, name, b, values in self.buffers:
            np.copyto(b, values)
            m._buffers[name] = b
            m.bump_buffers()
        for m in self.modules:   # nothing in float64 left for a backward
            m.__dict__["_cache"] = None
