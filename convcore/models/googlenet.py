"""GoogLeNet (Szegedy et al. 2014), Table 1 of the paper:

    conv 7x7/2 64 -> max pool 3/2 -> LRN -> conv 1x1 64 -> conv 3x3 192 -> LRN
    -> max pool 3/2 -> inception 3a, 3b -> max pool 3/2 -> 4a .. 4e
    -> max pool 3/2 -> 5a, 5b -> avg pool 7x7 -> dropout 40% -> FC 1000

Each Inception module is a Concat of four branches: 1x1; 1x1 reduce -> 3x3;
1x1 reduce -> 5x5; 3x3/1 max pool -> 1x1 projection, every conv followed
by ReLU. Pools use ceil_mode (Caffe's rounding, 224 -> 112 -> 56 -> 28 ->
14 -> 7). Without the two auxiliary classifiers: 6,998,552 parameters at
1000 classes (the paper's table sums its layers to about 6.8M; it lists
weights in thousands, rounded, and omits biases).

The final 7x7 average pool is adaptive (global), so smaller inputs (down
to 47x47, which leaves a 3x3 map for the last max pool) work: the same
weights, a smaller map.

googlenet_torchvision is torchvision's GoogLeNet, module for module, so its
state dict loads as it is (6,624,904 parameters at 1000 classes): every
conv is a BasicConv2d (bias-free conv "conv", BatchNorm2d(eps=0.001) "bn",
ReLU), no LRN, the Inception branches are named branch1..branch4 and the
"5x5" branch uses a 3x3 kernel (torchvision keeps that slip of its first
release for the pretrained weights), the fourth max pool is 2x2/2, dropout
0.2. Without the auxiliary classifiers (torchvision_keys drops their keys).
transform_input=True (what torchvision sets for its pretrained weights)
maps ImageNet-normalised input to the (x - 0.5) / 0.5 scaling those
weights were trained on, as torchvision's forward does.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from numpy.typing import DTypeLike

from convcore.nn import (AdaptiveAvgPool2d, BatchNorm2d, Concat, Conv2d, Dropout, Flatten,
                         Linear, LocalResponseNorm, MaxPool2d, Module, ReLU, Sequential)
from convcore.models._common import check_common, conv_out, layer_kwargs, network
from convcore.utils.types import Array, IntOrPair, Seed

# The paper gives no LRN constants; the BVLC Caffe reference model uses
# size 5, alpha 1e-4, beta 0.75, k 1, and Caffe (like torch) divides alpha
# by the size, so these are torch's LocalResponseNorm arguments as they are.
LRN_BVLC: Dict[str, Any] = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)

# name: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), Table 1
INCEPTION_TABLE = OrderedDict([
    ("3a", (64, 96, 128, 16, 32, 32)),
    ("3b", (128, 128, 192, 32, 96, 64)),
    ("4a", (192, 96, 208, 16, 48, 64)),
    ("4b", (160, 112, 224, 24, 64, 64)),
    ("4c", (128, 128, 256, 24, 64, 64)),
    ("4d", (112, 144, 288, 32, 64, 64)),
    ("4e", (256, 160, 320, 32, 128, 128)),
    ("5a", (256, 160, 320, 32, 128, 128)),
    ("5b", (384, 192, 384, 48, 128, 128)),
])


def _conv_relu(cin, cout, k, kw, padding=0, stride=1):
    return [Conv2d(cin, cout, k, stride=stride, padding=padding, **kw), ReLU()]


def inception(in_channels: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int,
              pool_proj: int, *, rng: Seed = None, dtype: DTypeLike = "float32") -> Concat:
    """One Inception module: Concat of the four branches; its output has
    c1 + c3 + c5 + pool_proj channels at the input's spatial size."""
    kw = layer_kwargs(rng, dtype)
    return Concat(
        Sequential(*_conv_relu(in_channels, c1, 1, kw)),
        Sequential(*_conv_relu(in_channels, c3_reduce, 1, kw),
                   *_conv_relu(c3_reduce, c3, 3, kw, padding=1)),
        Sequential(*_conv_relu(in_channels, c5_reduce, 1, kw),
                   *_conv_relu(c5_reduce, c5, 5, kw, padding=2)),
        Sequential(MaxPool2d(3, 1, padding=1, ceil_mode=True),
                   *_conv_relu(in_channels, pool_proj, 1, kw)),
    )


def googlenet(num_classes: int = 1000, in_channels: int = 3, input_size: IntOrPair = 224,
              dropout: float = 0.4, *, rng: Seed = None,
              dtype: DTypeLike = "float32") -> Sequential:
    """GoogLeNet without auxiliary classifiers; names follow torchvision
    (conv1, maxpool1, ..., inception3a, ..., fc)."""
    fn = "googlenet"
    num_classes, in_channels, (h, w) = check_common(fn, num_classes, in_channels, input_size)
    before_last_pool = [conv_out(conv_out(conv_out(conv_out(s, 7, 2, 3), 3, 2, 0, True),
                                          3, 2, 0, True), 3, 2, 0, True) for s in (h, w)]
    if min(before_last_pool) < 3:
        raise ValueError(f"{fn}: input_size {(h, w)} is too small: the fourth max pool "
                         f"would see a {before_last_pool[0]}x{before_last_pool[1]} map "
                         f"(needs 3x3; inputs of at least 47x47)")
    kw = layer_kwargs(rng, dtype)
    conv1 = Conv2d(in_channels, 64, 7, stride=2, padding=3, **kw)
    conv1.first_layer = True
    layers = [
        ("conv1", Sequential(conv1, ReLU())),
        ("maxpool1", MaxPool2d(3, 2, ceil_mode=True)),
        ("lrn1", LocalResponseNorm(**LRN_BVLC)),
        ("conv2", Sequential(*_conv_relu(64, 64, 1, kw))),
        ("conv3", Sequential(*_conv_relu(64, 192, 3, kw, padding=1))),
        ("lrn2", LocalResponseNorm(**LRN_BVLC)),
        ("maxpool2", MaxPool2d(3, 2, ceil_mode=True)),
    ]
    c = 192
    for name, widths in INCEPTION_TABLE.items():
        if name in ("4a", "5a"):
            layers.append((f"maxpool{name[0]}", MaxPool2d(3, 2, ceil_mode=True)))
        layers.append((f"inception{name}", inception(c, *widths, **kw)))
        c1, _, c3, _, c5, pp = widths
        c = c1 + c3 + c5 + pp
    layers += [
        ("avgpool", AdaptiveAvgPool2d(1)), ("flatten", Flatten()),
        ("dropout", Dropout(dropout, rng=kw["rng"])),
        ("fc", Linear(c, num_classes, **kw)),
    ]
    return network(layers)


# ---------------------------------------------------------------- torchvision's

# torchvision's transform_input: per channel x * std / 0.5 + (mean - 0.5) / 0.5
# with ImageNet's mean and std.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class TransformInput(Module):
    """torchvision GoogLeNet's transform_input: ImageNet-normalised RGB
    input rescaled per channel to (x - 0.5) / 0.5. No parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = np.array(_IMAGENET_STD) / 0.5
        self.shift = (np.array(_IMAGENET_MEAN) - 0.5) / 0.5

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        return tuple(input_shape)

    def forward(self, x: Array) -> Array:
        if getattr(x, "ndim", None) != 4 or x.shape[1] != 3:
            raise ValueError(f"TransformInput: expected (N, 3, H, W) RGB input, got shape "
                             f"{getattr(x, 'shape', None)}")
        k = (1, 3, 1, 1)
        y = x * self.scale.astype(x.dtype).reshape(k) + self.shift.astype(x.dtype).reshape(k)
        self._save_for_backward(x.dtype)
        return y

    def backward(self, grad_y: Array) -> Optional[Array]:
        (dtype,) = self._saved()
        if not self._input_grad_needed():
            return None
        return grad_y * self.scale.astype(dtype).reshape(1, 3, 1, 1)


def _basic_conv(cin, cout, k, kw, padding=0, stride=1):
    """torchvision's BasicConv2d: bias-free conv, BN(eps=0.001), ReLU."""
    return Sequential(OrderedDict([
        ("conv", Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False, **kw)),
        ("bn", BatchNorm2d(cout, eps=0.001, dtype=kw["dtype"])), ("relu", ReLU())]))


def inception_torchvision(in_channels: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int,
                          c5: int, pool_proj: int, *, rng: Seed = None,
                          dtype: DTypeLike = "float32") -> Concat:
    """torchvision's Inception block: branches branch1..branch4 of
    BasicConv2d, the "5x5" branch with a 3x3 kernel as torchvision's."""
    kw = layer_kwargs(rng, dtype)
    return Concat(OrderedDict([
        ("branch1", _basic_conv(in_channels, c1, 1, kw)),
        ("branch2", Sequential(_basic_conv(in_channels, c3_reduce, 1, kw),
                               _basic_conv(c3_reduce, c3, 3, kw, padding=1))),
        ("branch3", Sequential(_basic_conv(in_channels, c5_reduce, 1, kw),
                               _basic_conv(c5_reduce, c5, 3, kw, padding=1))),
        ("branch4", Sequential(MaxPool2d(3, 1, padding=1, ceil_mode=True),
                               _basic_conv(in_channels, pool_proj, 1, kw))),
    ]))


def googlenet_torchvision(num_classes: int = 1000, in_channels: int = 3,
                          input_size: IntOrPair = 224, dropout: float = 0.2,
                          transform_input: bool = False, *, rng: Seed = None,
                          dtype: DTypeLike = "float32") -> Sequential:
    """torchvision's GoogLeNet without auxiliary classifiers (keys and
    shapes as torchvision's, see the module docstring); inputs of at
    least 32x32 (the last max pool then sees a 2x2 map)."""
    fn = "googlenet_torchvision"
    num_classes, in_channels, _ = check_common(fn, num_classes, in_channels, input_size, 32)
    if transform_input and in_channels != 3:
        raise ValueError(f"{fn}: transform_input needs in_channels=3 (RGB), got {in_channels}")
    kw = layer_kwargs(rng, dtype)
    conv1 = _basic_conv(in_channels, 64, 7, kw, padding=3, stride=2)
    conv1.conv.first_layer = True
    layers: List[Tuple[str, Module]] = []
    if transform_input:
        transform = TransformInput()
        transform.first_layer = True
        layers.append(("transform_input", transform))
    layers += [
        ("conv1", conv1),
        ("maxpool1", MaxPool2d(3, 2, ceil_mode=True)),
        ("conv2", _basic_conv(64, 64, 1, kw)),
        ("conv3", _basic_conv(64, 192, 3, kw, padding=1)),
        ("maxpool2", MaxPool2d(3, 2, ceil_mode=True)),
    ]
    c = 192
    for name, widths in INCEPTION_TABLE.items():
        if name == "4a":
            layers.append(("maxpool3", MaxPool2d(3, 2, ceil_mode=True)))
        elif name == "5a":
            layers.append(("maxpool4", MaxPool2d(2, 2, ceil_mode=True)))
        layers.append((f"inception{name}", inception_torchvision(c, *widths, **kw)))
        c1, _, c3, _, c5, pp = widths
        c = c1 + c3 + c5 + pp
    layers += [
        ("avgpool", AdaptiveAvgPool2d(1)), ("flatten", Flatten()),
        ("dropout", Dropout(dropout, rng=kw["rng"])),
        ("fc", Linear(c, num_classes, **kw)),
    ]
    return network(layers)
