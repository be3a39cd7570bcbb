"""VGG (Simonyan & Zisserman 2014), configurations A, A-LRN, B, C, D, E of
the paper's Table 1, with optional batch norm after every convolution.

    A      vgg11   8 conv    A-LRN  A with LRN after the first conv
    B      vgg13  10 conv    C      B + one 1x1 conv in blocks 3-5 (vgg16_c)
    D      vgg16  13 conv    E      vgg19, 16 conv

Layout and names follow torchvision (features, avgpool, flatten,
classifier), so a torchvision VGG state dict loads as it is; VGG-16 has
138,357,544 parameters at 224x224 and 1000 classes (vgg16_bn 138,365,992).

Other input sizes: avgpool keeps torchvision's 7x7 output at 224; for
inputs whose five pools leave a smaller map (e.g. 32x32 CIFAR: 1x1) the
pool keeps that size and the first FC layer is sized from it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

from numpy.typing import DTypeLike

from convcore.utils.validation import check_int
from convcore.nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear,
                         LocalResponseNorm, MaxPool2d, ReLU, Sequential)
from convcore.models._common import check_common, layer_kwargs, network
from convcore.models.alexnet import LRN_PAPER
from convcore.utils.types import IntOrPair, Seed

# int: 3x3 conv with that many channels; (n, 1): a 1x1 conv; "M": max pool
# 2/2; "LRN": local response normalisation (configuration A-LRN only).
CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
          512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}


def _features(cfg, in_channels, batch_norm, kw):
    layers, c = [], in_channels
    for item in cfg:
        if item == "M":
            layers.append(MaxPool2d(2, 2))
        elif item == "LRN":
            layers.append(LocalResponseNorm(**LRN_PAPER))
        else:
            out, k = item if isinstance(item, tuple) else (item, 3)
            # the conv keeps its bias under batch norm, as torchvision's VGG (so
            # its state dicts load); BN's shift makes it redundant but harmless
            layers.append(Conv2d(c, out, k, padding=k // 2, **kw))
            if batch_norm:
                layers.append(BatchNorm2d(out, dtype=kw["dtype"]))
            layers.append(ReLU())
            c = out
    layers[0].first_layer = True
    return Sequential(*layers), c


def vgg(config: str = "D", num_classes: int = 1000, in_channels: int = 3,
        input_size: IntOrPair = 224, batch_norm: bool = False, dropout: float = 0.5,
        hidden: int = 4096, *, rng: Seed = None, dtype: DTypeLike = "float32") -> Sequential:
    """VGG of a configuration letter ("A", "A-LRN", "B", "C", "D", "E")."""
    fn = "vgg"
    if config not in CONFIGS:
        raise ValueError(f"{fn}: config must be one of {', '.join(CONFIGS)}, got {config!r}")
    num_classes, in_channels, (h, w) = check_common(fn, num_classes, in_channels, input_size, 32)
    hidden = check_int(hidden, "hidden", 1, fn)
    kw = layer_kwargs(rng, dtype)
    features, c = _features(CONFIGS[config], in_channels, batch_norm, kw)
    pooled = (min(7, h // 32), min(7, w // 32))
    drop_rng = kw["rng"]
    classifier = Sequential(
        Linear(c * pooled[0] * pooled[1], hidden, **kw), ReLU(), Dropout(dropout, rng=drop_rng),
        Linear(hidden, hidden, **kw), ReLU(), Dropout(dropout, rng=drop_rng),
        Linear(hidden, num_classes, **kw),
    )
    return network([
        ("features", features), ("avgpool", AdaptiveAvgPool2d(pooled)),
        ("flatten", Flatten()), ("classifier", classifier)])


class _Builder(Protocol):
    """vgg11 .. vgg19_bn: vgg() with the configuration fixed."""
    __name__: str
    __qualname__: str

    def __call__(self, num_classes: int = ..., in_channels: int = ...,
                 input_size: IntOrPair = ..., **kwargs: Any) -> Sequential: ...


def _named(config: str, batch_norm: bool) -> _Builder:
    def build(num_classes: int = 1000, in_channels: int = 3, input_size: IntOrPair = 224,
              **kwargs: Any) -> Sequential:
        return vgg(config, num_classes, in_channels, input_size, batch_norm, **kwargs)
    return build


vgg11, vgg11_bn = _named("A", False), _named("A", True)
vgg11_lrn = _named("A-LRN", False)
vgg13, vgg13_bn = _named("B", False), _named("B", True)
vgg16_c, vgg16_c_bn = _named("C", False), _named("C", True)
vgg16, vgg16_bn = _named("D", False), _named("D", True)
vgg19, vgg19_bn = _named("E", False), _named("E", True)
for _f, _name, _cfg in [(vgg11, "vgg11", "A"), (vgg11_bn, "vgg11_bn", "A"),
                        (vgg11_lrn, "vgg11_lrn", "A-LRN"), (vgg13, "vgg13", "B"),
                        (vgg13_bn, "vgg13_bn", "B"), (vgg16_c, "vgg16_c", "C"),
                        (vgg16_c_bn, "vgg16_c_bn", "C"), (vgg16, "vgg16", "D"),
                        (vgg16_bn, "vgg16_bn", "D"), (vgg19, "vgg19", "E"),
                        (vgg19_bn, "vgg19_bn", "E")]:
    _f.__name__ = _f.__qualname__ = _name
    _f.__doc__ = (f"VGG configuration {_cfg}" + (" with batch norm" if "bn" in _name else "")
                  + "; arguments as vgg().")
