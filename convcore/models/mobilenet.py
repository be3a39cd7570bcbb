"""MobileNets: v1 (Howard et al. 2017) and v2 (Sandler et al. 2018).

MobileNet-v1, Table 1 of the paper (no torchvision model; names are ours):

    conv1 3x3/2 32, bn1, relu1
    -> block1 .. block13: depthwise-separable blocks
         dw_conv 3x3 (groups = channels, stride s), dw_bn, dw_relu,
         pw_conv 1x1, pw_bn, pw_relu
       output channels 64, 128, 128, 256, 256, 512 (x6), 1024, 1024;
       stride 2 in blocks 2, 4, 6 and 12 (224 -> 112 -> 56 -> 28 -> 14 -> 7)
    -> global avgpool -> flatten -> fc

Every conv is bias-free (BN's shift replaces it); ReLU, not ReLU6 (the
paper's). The table prints stride 2 for block 13 as well, but the map is
7x7 before and after it and every reference implementation uses stride 1.
4,231,976 parameters at 1000 classes. Keys: "conv1.weight",
"block1.dw_conv.weight", "block13.pw_bn.running_var", "fc.weight".

MobileNet-v2, torchvision's mobilenet_v2 module for module, so its
state dict loads as it is ("features.0.0.weight",
"features.1.conv.0.0.weight", "features.2.conv.3.running_mean",
"features.18.1.bias", "classifier.1.weight"):

    features.0   conv 3x3/2 32 + BN + ReLU6           (Conv2dNormActivation)
    features.1-17 inverted residual blocks (t, c, n, s):
        (1, 16, 1, 1) (6, 24, 2, 2) (6, 32, 3, 2) (6, 64, 4, 2)
        (6, 96, 3, 1) (6, 160, 3, 2) (6, 320, 1, 1)
      block.conv = [1x1 expand to t*cin + BN + ReLU6] (when t != 1),
                   3x3 depthwise (stride s on the first of n) + BN + ReLU6,
                   1x1 project to c (conv, BN; linear bottleneck)
      with x + conv(x) (a Residual) when stride 1 and cin == c
    features.18  conv 1x1 1280 + BN + ReLU6
    -> global avgpool -> flatten -> classifier (dropout 0.2, linear)

BN eps 1e-5, momentum 0.1 (torch's defaults). Channels scale with
width_mult, rounded to multiples of 8 as torchvision's _make_divisible;
the last conv keeps 1280 below width 1. 3,504,872 parameters at 1000
classes and width 1.

Both end in a global average pool, so any input size works (the
strided convolutions are padded; a 1x1 map stays 1x1).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from numpy.typing import DTypeLike

from convcore.utils.validation import check_int
from convcore.nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, Module,
                         ReLU, ReLU6, Residual, Sequential)
from convcore.models._common import check_common, layer_kwargs, network
from convcore.utils.types import IntOrPair, Seed

# (output channels, stride of the depthwise conv), blocks 1-13 of Table 1
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

# torchvision's inverted_residual_setting: expansion t, channels c,
# repeats n, stride s of the first repeat
V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _width(width_mult, fn):
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) \
            or not width_mult > 0:
        raise ValueError(f"{fn}: width_mult must be a number > 0, got {width_mult!r}")
    return float(width_mult)


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """torchvision's _make_divisible: v rounded to the nearest multiple of
    `divisor` (at least min_value, default divisor), never more than 10%
    below v."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _conv_bn_act(cin, cout, k, stride, groups, act, kw):
    """torchvision's Conv2dNormActivation: bias-free conv ("0"), BN ("1"),
    activation ("2")."""
    conv = Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=False,
                  **kw)
    return Sequential(conv, BatchNorm2d(cout, eps=1e-5, momentum=0.1, dtype=kw["dtype"]), act())


# ---------------------------------------------------------------- v1

def depthwise_separable(cin: int, cout: int, stride: int = 1, *, rng: Seed = None,
                        dtype: DTypeLike = "float32") -> Sequential:
    """MobileNet-v1's block: 3x3 depthwise conv (stride) + BN + ReLU, then
    1x1 pointwise conv to cout + BN + ReLU."""
    kw = layer_kwargs(rng, dtype)
    dt = kw["dtype"]
    return Sequential(OrderedDict([
        ("dw_conv", Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False, **kw)),
        ("dw_bn", BatchNorm2d(cin, dtype=dt)), ("dw_relu", ReLU()),
        ("pw_conv", Conv2d(cin, cout, 1, bias=False, **kw)),
        ("pw_bn", BatchNorm2d(cout, dtype=dt)), ("pw_relu", ReLU()),
    ]))


def mobilenet_v1(num_classes: int = 1000, in_channels: int = 3, input_size: IntOrPair = 224,
                 width_mult: float = 1.0, *, rng: Seed = None,
                 dtype: DTypeLike = "float32") -> Sequential:
    """MobileNet-v1 (1.0-224: 4,231,976 parameters at 1000 classes).
    width_mult is the paper's alpha: every layer's channels times alpha
    (at least 8)."""
    fn = "mobilenet_v1"
    num_classes, in_channels, _ = check_common(fn, num_classes, in_channels, input_size)
    alpha = _width(width_mult, fn)
    kw = layer_kwargs(rng, dtype)

    def ch(c):
        return max(8, int(c * alpha))

    c = ch(32)
    conv1 = Conv2d(in_channels, c, 3, stride=2, padding=1, bias=False, **kw)
    conv1.first_layer = True
    layers = [("conv1", conv1), ("bn1", BatchNorm2d(c, dtype=kw["dtype"])), ("relu1", ReLU())]
    for i, (cout, stride) in enumerate(V1_BLOCKS, 1):
        layers.append((f"block{i}", depthwise_separable(c, ch(cout), stride, **kw)))
        c = ch(cout)
    layers += [("avgpool", AdaptiveAvgPool2d(1)), ("flatten", Flatten()),
               ("fc", Linear(c, num_classes, **kw))]
    return network(layers)


# ---------------------------------------------------------------- v2

class InvertedResidual(Residual):
    """x + conv(x): MobileNet-v2's block when its shape is kept (stride 1,
    same channels). A Residual with an identity shortcut whose body is the
    child named "conv", as torchvision's InvertedResidual, so the keys are
    "conv.0.0.weight" rather than "body.…"; `body` stays the attribute the
    Residual code uses."""

    def __init__(self, conv: Module) -> None:
        super().__init__(conv)
        # rename the child "body" to "conv", keeping the order
        items = [("conv" if k == "body" else k, m) for k, m in self._modules.items()]
        self._modules.clear()
        self._modules.update(items)

    @property
    def body(self):
        return self._modules["conv"]


def inverted_residual(cin: int, cout: int, stride: int, expand_ratio: int, *, rng: Seed = None,
                      dtype: DTypeLike = "float32") -> Module:
    """One MobileNet-v2 block: InvertedResidual (x + conv(x)) when stride is
    1 and cin == cout, else a Sequential with the one child "conv"
    (torchvision's keys either way)."""
    fn = "inverted_residual"
    stride = check_int(stride, "stride", 1, fn)
    if stride not in (1, 2):
        raise ValueError(f"{fn}: stride must be 1 or 2, got {stride}")
    kw = layer_kwargs(rng, dtype)
    hidden = int(round(cin * expand_ratio))
    layers = []
    if expand_ratio != 1:
        layers.append(_conv_bn_act(cin, hidden, 1, 1, 1, ReLU6, kw))
    layers += [_conv_bn_act(hidden, hidden, 3, stride, hidden, ReLU6, kw),
               Conv2d(hidden, cout, 1, bias=False, **kw),
               BatchNorm2d(cout, eps=1e-5, momentum=0.1, dtype=kw["dtype"])]
    conv = Sequential(*layers)
    if stride == 1 and cin == cout:
        return InvertedResidual(conv)
    return Sequential(OrderedDict([("conv", conv)]))


def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3, input_size: IntOrPair = 224,
                 width_mult: float = 1.0, dropout: float = 0.2, *, rng: Seed = None,
                 dtype: DTypeLike = "float32") -> Sequential:
    """MobileNet-v2 as torchvision's mobilenet_v2 (same module names and
    shapes; 3,504,872 parameters at 1000 classes, width 1)."""
    fn = "mobilenet_v2"
    num_classes, in_channels, _ = check_common(fn, num_classes, in_channels, input_size)
    width = _width(width_mult, fn)
    kw = layer_kwargs(rng, dtype)
    c = make_divisible(32 * width)
    last = make_divisible(1280 * max(1.0, width))
    stem = _conv_bn_act(in_channels, c, 3, 2, 1, ReLU6, kw)
    stem[0].first_layer = True
    features = [stem]
    for t, cout, n, s in V2_SETTING:
        cout = make_divisible(cout * width)
        for i in range(n):
            features.append(inverted_residual(c, cout, s if i == 0 else 1, t, **kw))
            c = cout
    features.append(_conv_bn_act(c, last, 1, 1, 1, ReLU6, kw))
    return network([
        ("features", Sequential(*features)),
        ("avgpool", AdaptiveAvgPool2d(1)), ("flatten", Flatten()),
        ("classifier", Sequential(Dropout(dropout, rng=kw["rng"]),
                                  Linear(last, num_classes, **kw))),
    ])
