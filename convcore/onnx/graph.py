"""Graph: a Module that runs layers wired as a DAG, as an imported ONNX
graph is (convcore.onnx.load builds it), and the small multi-input and
reshaping layers ONNX graphs need besides convcore.nn's.

    values = {input: x}
    forward:  for node in topological order: values[out] = module(*values[ins])
    backward: for node in reverse order: grads of its inputs += module.backward(
              grads[out]); a tensor that feeds several nodes sums their grads

Modules are registered under dotted names ("layer1.0.conv1"), nested in
plain Scope modules, so the state_dict keys are the dotted names: those
of the PyTorch model an ONNX file was exported from, where the exporter
kept them.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from convcore.nn import Module
from convcore.utils.types import Array


class Scope(Module):
    """A namespace for the Graph's modules; it does not run."""

    def forward(self, *args: Any) -> Any:
        raise TypeError("Scope only groups a Graph's layers by name; it does not run")


def _unbroadcast(grad, shape):
    """grad summed down to `shape` (the adjoint of numpy broadcasting)."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra else grad
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


class Add(Module):
    """a + b with numpy broadcasting (a residual sum); backward returns
    the gradients of both inputs."""

    def forward(self, a: Array, b: Array) -> Array:
        self._save_for_backward(np.shape(a), np.shape(b))
        return a + b

    def backward(self, grad_y: Array) -> Tuple[Array, Array]:
        sa, sb = self._saved()
        return _unbroadcast(grad_y, sa), _unbroadcast(grad_y, sb)


class Cat(Module):
    """Concatenation of several inputs along `axis` (ONNX Concat); backward
    returns one gradient per input."""

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = int(axis)

    def forward(self, *xs: Array) -> Array:
        axis = self.axis % xs[0].ndim
        self._save_for_backward(axis, [x.shape[axis] for x in xs])
        return np.concatenate(xs, axis=axis)

    def backward(self, grad_y: Array) -> Tuple[Array, ...]:
        axis, sizes = self._saved()
        return tuple(np.ascontiguousarray(g) for g in
                     np.split(grad_y, np.cumsum(sizes)[:-1], axis=axis))

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class Reshape(Module):
    """Reshape to `shape` with ONNX's rules: 0 copies the input's
    dimension there, -1 takes what is left."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Array) -> Array:
        target = tuple(x.shape[i] if s == 0 else s for i, s in enumerate(self.shape))
        try:
            y = x.reshape(target)
        except ValueError:
            raise ValueError(f"Reshape: cannot reshape input of shape {x.shape} to "
                             f"{self.shape}") from None
        self._save_for_backward(x.shape)
        return y

    def backward(self, grad_y: Array) -> Array:
        (shape,) = self._saved()
        return grad_y.reshape(shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Node:
    """One step of a Graph: `module` applied to the tensors named `inputs`,
    its result named `output`."""

    __slots__ = ("name", "module", "inputs", "output")

    def __init__(self, name: str, module: Module, inputs: Sequence[str], output: str) -> None:
        self.name, self.module = name, module
        self.inputs, self.output = tuple(inputs), output

    def __repr__(self) -> str:
        return f"Node({self.name!r}: {', '.join(self.inputs)} -> {self.output})"


class Graph(Module):
    """Layers wired as a DAG: `nodes` (Node, in topological order) read the
    tensor `input_name` or earlier nodes' outputs; the result is the
    tensor `output_name`. Each node's module is registered under its
    dotted name."""

    def __init__(self, nodes: Sequence[Node], input_name: str, output_name: str) -> None:
        super().__init__()
        object.__setattr__(self, "nodes", list(nodes))
        self.input_name, self.output_name = input_name, output_name
        known = {input_name}
        for node in self.nodes:
            missing = [t for t in node.inputs if t not in known]
            if missing:
                raise ValueError(f"Graph: node {node.name!r} reads {missing} before any "
                                 "node computes it (nodes must be in topological order)")
            known.add(node.output)
            self._register(node.name, node.module)
        if output_name not in known:
            raise ValueError(f"Graph: no node computes the output {output_name!r}")
        # after each node, the tensors nothing later reads (freed early)
        last_use = {}
        for i, node in enumerate(self.nodes):
            for t in node.inputs:
                last_use[t] = i
        self._free = [[t for t in dict.fromkeys(node.inputs)
                       if last_use[t] == i and t != output_name]
                      for i, node in enumerate(self.nodes)]

    def _register(self, dotted, module):
        *scopes, leaf = dotted.split(".")
        owner = self
        for s in scopes:
            child = owner._modules.get(s)
            if child is None:
                child = Scope()
                owner.add_module(s, child)
            elif not isinstance(child, Scope):
                raise ValueError(f"Graph: module name {dotted!r} nests under layer {s!r}")
            owner = child
        if leaf in owner._modules:
            raise ValueError(f"Graph: two modules named {dotted!r}")
        owner.add_module(leaf, module)

    def forward(self, x: Array) -> Array:
        values = {self.input_name: x}
        for node, free in zip(self.nodes, self._free):
            values[node.output] = node.module(*(values[t] for t in node.inputs))
            for t in free:
                del values[t]
        self._save_for_backward(True)
        return values[self.output_name]

    def backward(self, grad_y: Array) -> Optional[Array]:
        self._saved()
        grads = {self.output_name: grad_y}
        for node in reversed(self.nodes):
            g = grads.pop(node.output, None)
            if g is None:   # the output does not depend on this node
                continue
            gin = node.module.backward(g)
            if len(node.inputs) == 1:
                gin = (gin,)
            for t, gi in zip(node.inputs, gin):
                if gi is not None:
                    grads[t] = gi if t not in grads else grads[t] + gi
        return grads.get(self.input_name)

    def extra_repr(self) -> str:
        return f"{len(self.nodes)} nodes, {self.input_name} -> {self.output_name}"
