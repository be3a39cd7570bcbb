"""The network builder: Sequential, Residual and Concat.

Each container's backward runs its children's backward in reverse order
and sums the gradients of an input that feeds several branches, so any
nesting of the three is differentiable without a tape. A child's backward
may return None (a first layer skipping its input gradient); the
containers pass that on.

Frozen layers (fine-tuning): when nothing needs a container's input
gradient (a Sequential starting with a first_layer, or a container whose
own container said so), its backward stops at the first child with a
trainable parameter and tells that child, through skip_input_grad_once(),
to skip its input gradient too; the frozen children before it run no
backward. Residual and Concat pass the same word on to their branches.

Each module keeps the cache of its latest forward, so one module instance
may appear only once in a network (no weight sharing inside one pass).

Sequential and Residual also run the layers between convolutions fused
(conv + BN + ReLU, conv + ReLU, BN + ReLU, the residual sum + ReLU, and in
eval mode BN folded into the conv): see convcore.nn._fusion, and
convcore.nn.set_fusion(False) to turn it off.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Union, overload

from collections import OrderedDict

import numpy as np

from convcore._runtime.grad_mode import is_grad_enabled
from convcore.functional import add_relu, batch_norm_relu, batch_norm_relu_backward
from convcore.functional import relu_backward
from convcore.functional.fused import gradient_sum
from convcore.utils.validation import check_int
from convcore.nn import _fusion
from convcore.nn.activation import ReLU
from convcore.nn.module import Module
from convcore.nn.normalization import BatchNorm2d
from convcore.utils.types import Array


def _add(a, b):
    """Sum of two gradients, either of which may be None (not computed)."""
    if a is None:
        return b
    if b is None:
        return a
    return gradient_sum(a, b)


class Sequential(Module):
    """Children run in order; state_dict keys "0.weight", "1.bias", ...
    Also accepts one OrderedDict name -> module for named children."""

    @overload
    def __init__(self, *layers: Module) -> None: ...

    @overload
    def __init__(self, layers: OrderedDict[str, Module], /) -> None: ...

    def __init__(self, *layers: Any) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], OrderedDict):
            for name, m in layers[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(layers):
                self.add_module(str(i), m)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    @overload
    def __getitem__(self, idx: int) -> Module: ...

    @overload
    def __getitem__(self, idx: slice) -> Sequential: ...

    def __getitem__(self, idx: Union[int, slice]) -> Module:
        if isinstance(idx, slice):
            # Keep the original names, so sub.state_dict() keys stay meaningful
            # ("2.weight" stays "2.weight"), as torch does.
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        items = list(self._modules.values())
        try:
            return items[idx]
        except (IndexError, TypeError):
            raise IndexError(f"Sequential: index {idx!r} out of range for "
                             f"{len(items)} layers") from None

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self

    def _plan(self):
        """The steps forward runs: fused Steps and plain children (built at
        the first forward, rebuilt when the children change), or None
        when fusion is off or nothing fuses."""
        if not _fusion.active():
            return None
        children = tuple(self._modules.values())
        cached = self.__dict__.get("_fusion_plan")
        if cached is None or cached[0] != children:
            cached = (children, _fusion.build_plan(
                [m for m in children if m is not None], Residual))
            object.__setattr__(self, "_fusion_plan", cached)
        return cached[1]

    def forward(self, x: Array) -> Array:
        steps = self._plan()
        if steps is None:
            for m in self._modules.values():
                x = m(x)
            self._cache = None
            return x
        for m in steps:
            x = m(x)
        self._cache = steps if is_grad_enabled() else None
        return x

    def backward(self, grad_y: Array) -> Optional[Array]:
        steps = self._cache   # None: the forward ran the children one by one
        self._cache = None
        steps = list(self._modules.values()) if steps is None else steps
        need = self._input_grad_needed() and not _starts_with_first_layer(steps)
        return _run_backward(steps, grad_y, need)

    def _forward_head(self, x):
        """Run all children but the last (fused where possible); with
        _backward_head, lets a Residual fuse this body's last layer with
        its sum. Returns (output, the last child)."""
        steps = self._plan()
        steps = list(self._modules.values()) if steps is None else list(steps)
        tail = steps[-1]
        if isinstance(tail, _fusion.ConvBN) and tail.relu is None:
            steps[-1:] = [tail.conv, tail.bn]   # the caller fuses the BN
        for m in steps[:-1]:
            x = m(x)
        self._cache = steps[:-1] if is_grad_enabled() else None
        return x, steps[-1]

    def _backward_head(self, grad):
        steps = self._cache
        self._cache = None
        return _run_backward(steps, grad, self._input_grad_needed())


def _starts_with_first_layer(steps):
    """The first module of `steps` (inside nested Sequentials and fused
    steps) is a network's first layer: it returns no input gradient, so
    neither does the container, and a backward may stop earlier still."""
    m = steps[0] if steps else None
    while True:
        if isinstance(m, _fusion.Step):
            m = m.modules[0]
        elif type(m) is Sequential and len(m):
            m = next(iter(m))
        else:
            return bool(getattr(m, "first_layer", False))


def _trainable(step):
    """Whether a module or fused step has a parameter that requires grad."""
    modules = step.modules if isinstance(step, _fusion.Step) else (step,)
    return any(p.requires_grad for m in modules for p in m.parameters())


def _run_backward(steps, grad_y, need_input_grad=True):
    """Backward through `steps` in reverse. A fused step may overwrite the
    gradient it receives when the step after it made that array and
    nobody else holds it.

    need_input_grad False (the caller needs no gradient of the first step's
    input): the backward stops at the first step that has a trainable
    parameter, which is told to skip its own input gradient; the frozen
    steps before it run no backward at all. Returns None then."""
    steps = list(steps)
    stop, first = 0, None
    if not need_input_grad:
        stop = next((i for i, m in enumerate(steps) if _trainable(m)), len(steps))
        if stop < len(steps):
            first = steps[stop].modules[0] if isinstance(steps[stop], _fusion.Step) \
                else steps[stop]
            first.skip_input_grad_once()
    owned = False
    for m in reversed(steps[stop:]):
        if grad_y is None:  # an earlier layer asked not to compute it
            break
        if isinstance(m, _fusion.Step):
            grad_y = m.backward(grad_y, owned)
            owned = True
        else:
            grad_y = m.backward(grad_y)
            owned = type(m) in _fusion.FRESH_GRAD
    _end_skip(first)
    return grad_y if need_input_grad else None


def _end_skip(*modules):
    """Withdraw skip_input_grad_once() from modules whose backward did not
    read it (a batch norm, a backward not reached), so it holds for one
    backward only."""
    for m in modules:
        if m is not None:
            m.__dict__.pop("_skip_input_grad", None)


def _pass_on_skip(need_input_grad, *branches):
    """When the caller needs no input gradient, neither do the branches that
    all see that input (a Residual's body and shortcut, Concat's branches)."""
    if not need_input_grad:
        for m in branches:
            if m is not None:
                m.skip_input_grad_once()


class Residual(Module):
    """y = body(x) + shortcut(x); the shortcut is the identity when None
    (ResNet's identity block) or e.g. a 1x1 Conv2d + BatchNorm2d projection.
    Keys "body.…" and "shortcut.…"."""

    def __init__(self, body: Module, shortcut: Optional[Module] = None) -> None:
        super().__init__()
        self.body = body
        self.add_module("shortcut", shortcut)  # None: identity, no keys

    def forward(self, x: Array) -> Array:
        yb = self.body(x)
        ys = x if self.shortcut is None else self.shortcut(x)
        if yb.shape != ys.shape:
            raise ValueError(f"Residual: body output {yb.shape} and shortcut output "
                             f"{ys.shape} differ; give a projection shortcut")
        return yb + ys

    def backward(self, grad_y: Array) -> Optional[Array]:
        _pass_on_skip(self._input_grad_needed(), self.body, self.shortcut)
        # The input feeds both paths: its gradient is the sum of theirs.
        g_body = self.body.backward(grad_y)
        g_short = grad_y if self.shortcut is None else self.shortcut.backward(grad_y)
        _end_skip(self.body, self.shortcut)
        return _add(g_body, g_short)

    # -- the sum followed by a ReLU (a ResNet block), fused -----------------
    def forward_relu(self, x, relu):
        """relu(self(x)) where `relu` is the ReLU module after this block.
        Fused: when the body is a Sequential ending in a BatchNorm2d that
        runs on batch statistics, relu(bn(z) + shortcut(x)) is one pass
        (batch_norm_relu with the residual); otherwise the sum and the ReLU
        are one pass (add_relu) after the body, which runs fused itself
        (in eval mode its last conv + BN folded). Falls back to the modules
        one by one as _fusion describes."""
        body = self.body
        if not (_fusion.active() and _fusion.plain(relu, ReLU)
                and isinstance(x, np.ndarray)):
            # Residual's own sum (a subclass's forward may be this method)
            y = relu(Residual.forward(self, x))
            self._fused_relu = ("unfused",) if is_grad_enabled() else None
            return y
        last = None
        if (type(body) is Sequential and _fusion.plain(body, Sequential) and len(body)
                and isinstance(body[-1], BatchNorm2d)):
            last = body[-1]
            if not (_fusion.plain(last, BatchNorm2d)
                    and (last.training or not last.track_running_stats)):
                last = None
        if last is not None:
            z, last_step = body._forward_head(x)
            r = x if self.shortcut is None else self.shortcut(x)
            if (last_step is not last or not _fusion._bn_ok(last, z)
                    or not isinstance(r, np.ndarray) or r.dtype != z.dtype):
                # the plan put the BN in a fused step, or the arrays do not
                # suit it: finish the body as written
                yb = last_step(z)
                body_done = ("head+last", last_step)
            else:
                body_done = None
        else:
            yb = body(x)
            body_done = ("body",)
            r = x if self.shortcut is None else self.shortcut(x)
        if body_done is None:
            if r.shape != z.shape:
                raise ValueError(f"Residual: body output {z.shape} and shortcut "
                                 f"output {r.shape} differ; give a projection shortcut")
            use_batch_stats, momentum = last._step_mode()
            y, mean, invstd = batch_norm_relu(
                z, last.running_mean, last.running_var, _fusion._data(last.weight),
                _fusion._data(last.bias), training=use_batch_stats, momentum=momentum,
                eps=last.eps, residual=r, return_stats=True)
            keep = ("bn", last, z, y, mean, invstd, use_batch_stats)
        else:
            if yb.shape != r.shape:
                raise ValueError(f"Residual: body output {yb.shape} and shortcut "
                                 f"output {r.shape} differ; give a projection shortcut")
            y = add_relu(yb, r) if yb.dtype == r.dtype else relu(yb + r)
            keep = ("sum", body_done, y, yb.dtype == r.dtype)
        self._fused_relu = keep if is_grad_enabled() else None
        return y

    def backward_relu(self, grad_y, relu):
        """Backward of forward_relu."""
        keep = self.__dict__.get("_fused_relu")
        if keep is None:
            raise RuntimeError("Residual.backward: nothing saved for backward; call "
                               "forward first (outside convcore.no_grad())")
        self._fused_relu = None
        if keep[0] == "unfused":
            return Residual.backward(self, relu.backward(grad_y))
        _pass_on_skip(self._input_grad_needed(), self.body, self.shortcut)
        if keep[0] == "bn":
            _, last, z, y, mean, invstd, use_batch_stats = keep
            gz, gw, gb, g = batch_norm_relu_backward(
                grad_y, y, z, mean, invstd, _fusion._data(last.weight),
                training=use_batch_stats, residual_grad=True)
            if last.weight is not None:
                last.weight.accumulate_grad(gw)
                last.bias.accumulate_grad(gb)
            g_body = self.body._backward_head(gz)
        else:
            _, body_done, y, fused = keep
            g = relu_backward(grad_y, y) if fused else relu.backward(grad_y)
            if body_done[0] == "body":
                g_body = self.body.backward(g)
            else:
                last_step = body_done[1]
                gl = (last_step.backward(g) if not isinstance(last_step, _fusion.Step)
                      else last_step.backward(g, False))
                g_body = self.body._backward_head(gl)
        g_short = g if self.shortcut is None else self.shortcut.backward(g)
        _end_skip(self.body, self.shortcut)
        return _add(g_body, g_short)


class Concat(Module):
    """Every branch sees the same input; outputs are concatenated along
    `axis` (channels by default: an Inception block). Keys "0.…", "1.…",
    or the names of one OrderedDict name -> branch (as Sequential)."""

    @overload
    def __init__(self, *branches: Module, axis: int = 1) -> None: ...

    @overload
    def __init__(self, branches: OrderedDict[str, Module], /, *, axis: int = 1) -> None: ...

    def __init__(self, *branches: Any, axis: int = 1) -> None:
        super().__init__()
        pairs = (branches[0].items() if len(branches) == 1
                 and isinstance(branches[0], OrderedDict) else enumerate(branches))
        named = [(str(k), m) for k, m in pairs]
        if not named:
            raise ValueError("Concat: needs at least one branch")
        self.axis = check_int(axis, "axis", None, "Concat")
        for name, m in named:
            self.add_module(name, m)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, idx: int) -> Module:
        return list(self._modules.values())[idx]

    def forward(self, x: Array) -> Array:
        outs = [m(x) for m in self._modules.values()]
        axis = self.axis % outs[0].ndim
        for i, o in enumerate(outs[1:], 1):
            if o.ndim != outs[0].ndim or o.shape[:axis] + o.shape[axis + 1:] != \
                    outs[0].shape[:axis] + outs[0].shape[axis + 1:]:
                raise ValueError(f"Concat: branch {i} output {o.shape} does not match "
                                 f"branch 0 output {outs[0].shape} off axis {self.axis}")
        self._save_for_backward(axis, [o.shape[axis] for o in outs])
        return np.concatenate(outs, axis=axis)

    def backward(self, grad_y: Array) -> Optional[Array]:
        axis, sizes = self._saved()
        pieces = np.split(grad_y, np.cumsum(sizes)[:-1], axis=axis)
        _pass_on_skip(self._input_grad_needed(), *self._modules.values())
        grad_x = None
        for m, g in zip(self._modules.values(), pieces):
            grad_x = _add(grad_x, m.backward(np.ascontiguousarray(g)))
        _end_skip(*self._modules.values())
        return grad_x

    def extra_repr(self) -> str:
        return f"axis={self.axis}"
