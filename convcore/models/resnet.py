"""ResNets (He et al. 2015): ImageNet resnet18/34/50 and the CIFAR resnet20.

ImageNet layout (names as torchvision's):
    conv1 7x7/2 64, bn1, relu, maxpool 3/2 -> layer1..layer4 (64, 128, 256,
    512 planes; stride 2 at the start of layers 2-4) -> global avgpool -> fc
Blocks are Residual containers with a ReLU after the sum (ResidualReLU):
    basic       3x3 conv-BN-ReLU, 3x3 conv-BN                (resnet18/34)
    bottleneck  1x1 conv-BN-ReLU, 3x3 conv-BN-ReLU, 1x1 conv-BN (x4 planes)
                stride on the 3x3 conv, as torchvision ("v1.5")  (resnet50)
and, where the shape changes, a projection shortcut 1x1 conv (stride) + BN
(the paper's option B). Parameters at 1000 classes: ResNet-18 11,689,512,
ResNet-34 21,797,672, ResNet-50 25,557,032 (torchvision's counts).

State-dict keys are "layer1.0.body.conv1.weight", "layer2.0.shortcut.0.weight";
torchvision_names.py maps torchvision's ResNet keys to these and back.

CIFAR ResNet-20 (section 4.2): 3x3 conv 16, then 3 stages of n=3 basic
blocks with 16, 32, 64 planes on 32x32, 16x16, 8x8 maps, global avgpool,
fc. The paper's shortcuts are identity, with zero-padded extra channels
when the shape changes (option A, parameter-free: 269,722 parameters);
shortcut="B" uses projections instead (272,474). depth=6n+2 gives ResNet-32/44/56/110.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Tuple

import numpy as np
from numpy.typing import DTypeLike

from convcore.utils.validation import check_int
from convcore.nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d,
                         Module, ReLU, Sequential)
from convcore.models._common import ResidualReLU, check_common, layer_kwargs, network
from convcore.utils.types import Array, IntOrPair, Seed


def _conv_bn(cin, cout, k, stride, kw):
    """(conv, bn) pair; the conv has no bias, BN's shift replaces it."""
    conv = Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, **kw)
    return conv, BatchNorm2d(cout, dtype=kw["dtype"])


def _projection(cin, cout, stride, kw):
    conv, bn = _conv_bn(cin, cout, 1, stride, kw)
    return Sequential(conv, bn)


def basic_block(cin: int, planes: int, stride: int = 1, shortcut: str = "B", *, rng: Seed = None,
                dtype: DTypeLike = "float32") -> ResidualReLU:
    """Two 3x3 conv-BN with ReLU between and after the sum; out = planes."""
    kw = layer_kwargs(rng, dtype)
    c1, b1 = _conv_bn(cin, planes, 3, stride, kw)
    c2, b2 = _conv_bn(planes, planes, 3, 1, kw)
    body = Sequential(OrderedDict([("conv1", c1), ("bn1", b1), ("relu", ReLU()),
                                   ("conv2", c2), ("bn2", b2)]))
    short = None
    if stride != 1 or cin != planes:
        short = (_projection(cin, planes, stride, kw) if shortcut == "B"
                 else PadShortcut(cin, planes, stride))
    return ResidualReLU(body, short)


def bottleneck_block(cin: int, planes: int, stride: int = 1, *, rng: Seed = None,
                     dtype: DTypeLike = "float32") -> ResidualReLU:
    """1x1 reduce, 3x3 (with the stride), 1x1 expand to 4*planes."""
    kw = layer_kwargs(rng, dtype)
    out = 4 * planes
    c1, b1 = _conv_bn(cin, planes, 1, 1, kw)
    c2, b2 = _conv_bn(planes, planes, 3, stride, kw)
    c3, b3 = _conv_bn(planes, out, 1, 1, kw)
    body = Sequential(OrderedDict([("conv1", c1), ("bn1", b1), ("relu1", ReLU()),
                                   ("conv2", c2), ("bn2", b2), ("relu2", ReLU()),
                                   ("conv3", c3), ("bn3", b3)]))
    short = _projection(cin, out, stride, kw) if stride != 1 or cin != out else None
    return ResidualReLU(body, short)


class PadShortcut(Module):
    """The CIFAR ResNets' parameter-free shortcut (option A): take every
    `stride`-th pixel and zero-pad the channels equally on both sides up to
    `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels or (out_channels - in_channels) % 2:
            raise ValueError(f"PadShortcut: out_channels={out_channels} must be >= "
                             f"in_channels={in_channels} with an even difference")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def _pad(self):
        return (self.out_channels - self.in_channels) // 2

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        n, _, h, w = input_shape
        s = self.stride
        return (n, self.out_channels, -(-h // s), -(-w // s))

    def forward(self, x: Array) -> Array:
        s, lo = self.stride, self._pad()
        sub = x[:, :, ::s, ::s]
        y = np.zeros((x.shape[0], self.out_channels) + sub.shape[2:], dtype=x.dtype)
        y[:, lo:lo + self.in_channels] = sub
        self._save_for_backward(x.shape)
        return y

    def backward(self, grad_y: Array) -> Array:
        (shape,) = self._saved()
        s, lo = self.stride, self._pad()
        gx = np.zeros(shape, dtype=grad_y.dtype)
        gx[:, :, ::s, ::s] = grad_y[:, lo:lo + self.in_channels]
        return gx

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


# depth: (block, blocks per layer)
_IMAGENET = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
             50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
             152: ("bottleneck", (3, 8, 36, 3))}


def resnet(depth: int = 18, num_classes: int = 1000, in_channels: int = 3,
           input_size: IntOrPair = 224, *, rng: Seed = None,
           dtype: DTypeLike = "float32") -> Sequential:
    """ImageNet ResNet of depth 18, 34, 50, 101 or 152. The final pool is
    global, so any input of at least 32x32 works (1x1 map before it)."""
    fn = f"resnet{depth}"
    if depth not in _IMAGENET:
        raise ValueError(f"resnet: depth must be one of {sorted(_IMAGENET)}, got {depth!r}")
    num_classes, in_channels, _ = check_common(fn, num_classes, in_channels, input_size, 32)
    kw = layer_kwargs(rng, dtype)
    kind, counts = _IMAGENET[depth]
    expansion = 4 if kind == "bottleneck" else 1
    conv1, bn1 = _conv_bn(in_channels, 64, 7, 2, kw)
    conv1.padding = (3, 3)
    conv1.first_layer = True
    layers = [("conv1", conv1), ("bn1", bn1), ("relu", ReLU()),
              ("maxpool", MaxPool2d(3, 2, padding=1))]
    c = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), counts)):
        blocks = []
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            if kind == "basic":
                blocks.append(basic_block(c, planes, stride, **kw))
            else:
                blocks.append(bottleneck_block(c, planes, stride, **kw))
            c = planes * expansion
        layers.append((f"layer{i + 1}", Sequential(*blocks)))
    layers += [("avgpool", AdaptiveAvgPool2d(1)), ("flatten", Flatten()),
               ("fc", Linear(c, num_classes, **kw))]
    return network(layers)


def resnet18(num_classes: int = 1000, in_channels: int = 3, input_size: IntOrPair = 224,
             **kwargs: Any) -> Sequential:
    """ResNet-18 (basic blocks 2-2-2-2), 11,689,512 parameters at 1000 classes."""
    return resnet(18, num_classes, in_channels, input_size, **kwargs)


def resnet34(num_classes: int = 1000, in_channels: int = 3, input_size: IntOrPair = 224,
             **kwargs: Any) -> Sequential:
    """ResNet-34 (basic blocks 3-4-6-3), 21,797,672 parameters at 1000 classes."""
    return resnet(34, num_classes, in_channels, input_size, **kwargs)


def resnet50(num_classes: int = 1000, in_channels: int = 3, input_size: IntOrPair = 224,
             **kwargs: Any) -> Sequential:
    """ResNet-50 (bottlenecks 3-4-6-3), 25,557,032 parameters at 1000 classes."""
    return resnet(50, num_classes, in_channels, input_size, **kwargs)


def resnet_cifar(depth: int = 20, num_classes: int = 10, in_channels: int = 3,
                 input_size: IntOrPair = 32, shortcut: str = "A", *, rng: Seed = None,
                 dtype: DTypeLike = "float32") -> Sequential:
    """CIFAR ResNet of depth 6n+2 (20, 32, 44, 56, 110, ...); shortcut "A"
    (zero padding, the paper's) or "B" (1x1 conv + BN projections)."""
    fn = f"resnet{depth}"
    depth = check_int(depth, "depth", 8, "resnet_cifar")
    if (depth - 2) % 6:
        raise ValueError(f"resnet_cifar: depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    if shortcut not in ("A", "B"):
        raise ValueError(f"{fn}: shortcut must be 'A' (zero padding) or 'B' (projection), "
                         f"got {shortcut!r}")
    num_classes, in_channels, _ = check_common(fn, num_classes, in_channels, input_size, 4)
    kw = layer_kwargs(rng, dtype)
    n = (depth - 2) // 6
    conv1, bn1 = _conv_bn(in_channels, 16, 3, 1, kw)
    conv1.first_layer = True
    layers = [("conv1", conv1), ("bn1", bn1), ("relu", ReLU())]
    c = 16
    for i, planes in enumerate((16, 32, 64)):
        blocks = []
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            blocks.append(basic_block(c, planes, stride, shortcut, **kw))
            c = planes
        layers.append((f"layer{i + 1}", Sequential(*blocks)))
    layers += [("avgpool", AdaptiveAvgPool2d(1)), ("flatten", Flatten()),
               ("fc", Linear(c, num_classes, **kw))]
    return network(layers)


def resnet20(num_classes: int = 10, in_channels: int = 3, input_size: IntOrPair = 32,
             **kwargs: Any) -> Sequential:
    """CIFAR ResNet-20, 269,722 parameters at 10 classes (option A shortcuts; 272,474 with "B")."""
    return resnet_cifar(20, num_classes, in_channels, input_size, **kwargs)
