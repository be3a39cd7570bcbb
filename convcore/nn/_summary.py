"""model.summary(): output shapes, parameter counts and multiply-adds.

The model's own forward runs once on a batch of one, but every leaf layer
that knows its output shape (all of convcore's) returns zeros of that shape
instead of computing: containers and custom forward code route the shapes
as they route arrays, and VGG-16 costs nothing. Leaves that do not know
their shape run for real. Everything happens under no_grad().
"""
import threading
from dataclasses import dataclass

import numpy as np

from convcore._runtime.grad_mode import no_grad

_local = threading.local()


def active_recorder():
    return getattr(_local, "recorder", None)


@dataclass
class SummaryRow:
    name: str           # qualified module name ("features.0")
    kind: str           # class name ("Conv2d")
    output_shape: tuple  # one sample's output, without the batch dimension
    params: int         # parameters owned by this layer
    macs: int           # multiply-adds for one sample


class Summary:
    """The result of Module.summary(); str() gives the table."""

    def __init__(self, rows, input_shape, total_params, trainable_params):
        self.rows = rows
        self.input_shape = input_shape
        self.total_params = total_params
        self.trainable_params = trainable_params
        self.total_macs = sum(r.macs for r in rows)

    @property
    def total_flops(self):
        return 2 * self.total_macs

    def __str__(self):
        header = ("Layer", "Type", "Output shape", "Params", "Mult-adds")
        body = [(r.name, r.kind, "x".join(map(str, r.output_shape)),
                 f"{r.params:,}", f"{r.macs:,}") for r in self.rows]
        widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))

        def fmt(cells):
            left = [str(c).ljust(w) for c, w in zip(cells[:3], widths[:3])]
            right = [str(c).rjust(w) for c, w in zip(cells[3:], widths[3:])]
            return "  ".join(left + right)

        lines = [f"input {'x'.join(map(str, self.input_shape))}", fmt(header), rule]
        lines += [fmt(r) for r in body]
        lines += [rule,
                  f"Total params: {self.total_params:,}",
                  f"Trainable params: {self.trainable_params:,}",
                  f"Mult-adds: {self.total_macs:,} ({self.total_flops:,} FLOPs)"]
        return "\n".join(lines)

    __repr__ = __str__


class _Recorder:
    def __init__(self, names):
        self.names = names
        self.rows = []

    def record(self, module, x, *rest, **kwargs):
        shape = module.output_shape(x.shape)
        if shape is None:
            y = module.forward(x, *rest, **kwargs)
            shape = y.shape
        else:
            y = np.zeros(shape, dtype=x.dtype)
        params = sum(p.size for p in module._parameters.values() if p is not None)
        self.rows.append(SummaryRow(self.names.get(id(module), type(module).__name__),
                                    type(module).__name__, tuple(shape[1:]), params,
                                    int(module.macs(x.shape, shape))))
        return y


def summarize(model, input_shape, dtype):
    """Run model's forward in recording mode on zeros of (1,) + input_shape."""
    if any(not isinstance(d, (int, np.integer)) or d < 1 for d in input_shape):
        raise ValueError(f"summary: input_shape must be positive ints without the "
                         f"batch dimension, e.g. (3, 224, 224); got {input_shape}")
    names = {id(m): (name or type(m).__name__) for name, m in model.named_modules()}
    recorder = _Recorder(names)
    x = np.zeros((1,) + tuple(int(d) for d in input_shape), dtype=dtype)
    if active_recorder() is not None:
        raise RuntimeError("summary: already summarising on this thread")
    _local.recorder = recorder
    try:
        with no_grad():
            model(x)
    finally:
        _local.recorder = None
    params = model.parameters()
    return Summary(recorder.rows, tuple(input_shape), sum(p.size for p in params),
                   sum(p.size for p in params if p.requires_grad))
