"""The network builder: Sequential, Residual and Concat.

Each container's backward runs its children's backward in reverse order
and sums the gradients of an input that feeds several branches, so any
nesting of the three is differentiable without a tape. A child's backward
may return None (a first layer skipping its input gradient); the
containers pass that on.

Each module keeps the cache of its latest forward, so one module instance
may appear only once in a network (no weight sharing inside one pass).
"""
from collections import OrderedDict

import numpy as np

from convcore.functional._validation import check_int
from convcore.nn.module import Module


def _add(a, b):
    """Sum of two gradients, either of which may be None (not computed)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class Sequential(Module):
    """Children run in order; state_dict keys "0.weight", "1.bias", ...
    Also accepts one OrderedDict name -> module for named children."""

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], OrderedDict):
            for name, m in layers[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(layers):
                self.add_module(str(i), m)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
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

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def backward(self, grad_y):
        for m in reversed(self._modules.values()):
            if grad_y is None:  # an earlier layer asked not to compute it
                break
            grad_y = m.backward(grad_y)
        return grad_y


class Residual(Module):
    """y = body(x) + shortcut(x); the shortcut is the identity when None
    (ResNet's identity block) or e.g. a 1x1 Conv2d + BatchNorm2d projection.
    Keys "body.…" and "shortcut.…"."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body
        self.add_module("shortcut", shortcut)  # None: identity, no keys

    def forward(self, x):
        yb = self.body(x)
        ys = x if self.shortcut is None else self.shortcut(x)
        if yb.shape != ys.shape:
            raise ValueError(f"Residual: body output {yb.shape} and shortcut output "
                             f"{ys.shape} differ; give a projection shortcut")
        return yb + ys

    def backward(self, grad_y):
        # The input feeds both paths: its gradient is the sum of theirs.
        g_body = self.body.backward(grad_y)
        g_short = grad_y if self.shortcut is None else self.shortcut.backward(grad_y)
        return _add(g_body, g_short)


class Concat(Module):
    """Every branch sees the same input; outputs are concatenated along
    `axis` (channels by default: an Inception block). Keys "0.…", "1.…"."""

    def __init__(self, *branches, axis=1):
        super().__init__()
        if not branches:
            raise ValueError("Concat: needs at least one branch")
        self.axis = check_int(axis, "axis", None, "Concat")
        for i, m in enumerate(branches):
            self.add_module(str(i), m)

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, idx):
        return list(self._modules.values())[idx]

    def forward(self, x):
        outs = [m(x) for m in self._modules.values()]
        axis = self.axis % outs[0].ndim
        for i, o in enumerate(outs[1:], 1):
            if o.ndim != outs[0].ndim or o.shape[:axis] + o.shape[axis + 1:] != \
                    outs[0].shape[:axis] + outs[0].shape[axis + 1:]:
                raise ValueError(f"Concat: branch {i} output {o.shape} does not match "
                                 f"branch 0 output {outs[0].shape} off axis {self.axis}")
        self._save_for_backward(axis, [o.shape[axis] for o in outs])
        return np.concatenate(outs, axis=axis)

    def backward(self, grad_y):
        axis, sizes = self._saved()
        pieces = np.split(grad_y, np.cumsum(sizes)[:-1], axis=axis)
        grad_x = None
        for m, g in zip(self._modules.values(), pieces):
            grad_x = _add(grad_x, m.backward(np.ascontiguousarray(g)))
        return grad_x

    def extra_repr(self):
        return f"axis={self.axis}"
