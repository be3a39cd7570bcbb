"""Shared pieces of the model builders: argument checks, the top-level
network and the post-add activation block that ResNet needs."""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import numpy as np

from convcore import init
from convcore.utils.validation import check_int, int_pair, output_size
from convcore.nn import Module, ReLU, Residual, Sequential
from convcore.models.torchvision_names import torchvision_keys
from convcore.utils.types import Array


def check_common(fn, num_classes, in_channels, input_size, min_size=1):
    """Validated (num_classes, in_channels, (h, w)); `min_size` is the
    smallest spatial size the architecture can reduce to 1x1 or more."""
    num_classes = check_int(num_classes, "num_classes", 1, fn)
    in_channels = check_int(in_channels, "in_channels", 1, fn)
    hw = int_pair(input_size, "input_size", 1, fn)
    if min(hw) < min_size:
        raise ValueError(f"{fn}: input_size {hw} is too small; this architecture needs "
                         f"at least {min_size}x{min_size} inputs")
    return num_classes, in_channels, hw


def layer_kwargs(rng, dtype):
    """Keyword arguments shared by weight layers: one Generator for the
    whole model (so one seed fixes every initial weight) and the dtype."""
    return {"rng": init.get_rng(rng), "dtype": np.dtype(dtype).type}


def network(layers):
    """A zoo model: Sequential of the (name, module) pairs `layers` that
    loads torchvision's state-dict keys as well as its own (its
    state_dict_key_map)."""
    model = Sequential(OrderedDict(layers))
    model.state_dict_key_map = torchvision_keys
    return model


def conv_out(size, kernel, stride=1, padding=0, ceil_mode=False):
    """One spatial dimension after a convolution or pooling window (< 1:
    the window does not fit)."""
    return output_size(size, kernel, stride, 2 * padding, 1, ceil_mode)


class ResidualReLU(Residual):
    """relu(body(x) + shortcut(x)): a ResNet block. The activation after the
    sum is a child named "relu" (no parameters, so the state-dict keys stay
    "body.…" and "shortcut.…")."""

    def __init__(self, body: Module, shortcut: Optional[Module] = None) -> None:
        super().__init__(body, shortcut)
        self.relu = ReLU()

    def forward(self, x: Array) -> Array:
        # relu(Residual.forward(x)), with the sum and ReLU fused
        return self.forward_relu(x, self.relu)

    def backward(self, grad_y: Array) -> Optional[Array]:
        return self.backward_relu(grad_y, self.relu)
