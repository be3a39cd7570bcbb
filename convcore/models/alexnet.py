"""AlexNet (Krizhevsky et al. 2012), the seeds' single-tower dimensions:

    227x227x3 -> conv 96@11x11/4 -> ReLU -> LRN -> max pool 3/2        55 -> 27
    -> conv 256@5x5 pad 2 -> ReLU -> LRN -> max pool 3/2               27 -> 13
    -> conv 384@3x3 pad 1 -> conv 384@3x3 pad 1 -> conv 256@3x3 pad 1
    -> max pool 3/2                                                    13 -> 6
    -> dropout, FC 4096 -> dropout, FC 4096 -> FC 1000

Parameters: 62,378,344 single tower (the widely quoted "60M"; with
towers=2, conv2/4/5 are grouped as on the paper's two GPUs: 60,965,224).

LRN: the paper's n=5, k=2, beta=0.75 and alpha=1e-4 applied to the *sum*
of squares; convcore's LocalResponseNorm (as torch's) divides alpha by n,
so alpha is passed as 5e-4 to give the paper's normalisation.

Other input sizes: the classifier's first layer is sized from the map the
features leave (6x6 at 227); the smallest input that survives the three
pools is 63x63.

alexnet_torchvision is torchvision's AlexNet ("one weird trick", Krizhevsky
2014), module for module, so its state dict loads as it is: 64-192-384-256-
256 channels, no LRN, one tower, an adaptive average pool to 6x6 before the
classifier (61,100,840 parameters at 1000 classes):

    features.0 conv 64@11x11/4 pad 2, ReLU, max pool 3/2
    features.3 conv 192@5x5 pad 2, ReLU, max pool 3/2
    features.6 conv 384@3x3, features.8 conv 256@3x3, features.10 conv 256@3x3
      (pad 1, each with ReLU), max pool 3/2
    avgpool (6x6) -> flatten -> classifier: dropout, FC 4096 (classifier.1),
      ReLU, dropout, FC 4096 (classifier.4), ReLU, FC (classifier.6)
"""

from __future__ import annotations

from typing import Any, Dict

from numpy.typing import DTypeLike

from convcore.utils.validation import check_int
from convcore.nn import (AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, LocalResponseNorm,
                         MaxPool2d, ReLU, Sequential)
from convcore.models._common import check_common, conv_out, layer_kwargs, network
from convcore.utils.types import IntOrPair, Seed

LRN_PAPER: Dict[str, Any] = dict(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)


def _features_size(s):
    s = conv_out(s, 11, 4)
    s = conv_out(s, 3, 2)
    s = conv_out(s, 3, 2)       # conv2 keeps the size (pad 2)
    return conv_out(s, 3, 2)    # conv3-5 keep it (pad 1)


def alexnet(num_classes: int = 1000, in_channels: int = 3, input_size: IntOrPair = 227,
            dropout: float = 0.5, towers: int = 1, hidden: int = 4096, *, rng: Seed = None,
            dtype: DTypeLike = "float32") -> Sequential:
    """AlexNet as Sequential(features, flatten, classifier).

    towers : 1 (single tower, the seeds' dimensions) or 2 (the paper's
        two-GPU grouping of conv2, conv4 and conv5)
    hidden : width of the two hidden FC layers (4096 in the paper)
    """
    fn = "alexnet"
    num_classes, in_channels, (h, w) = check_common(fn, num_classes, in_channels, input_size, 63)
    towers = check_int(towers, "towers", 1, fn)
    if towers not in (1, 2):
        raise ValueError(f"{fn}: towers must be 1 or 2, got {towers}")
    hidden = check_int(hidden, "hidden", 1, fn)
    kw = layer_kwargs(rng, dtype)
    g = towers
    conv1 = Conv2d(in_channels, 96, 11, stride=4, **kw)
    conv1.first_layer = True
    features = Sequential(
        conv1, ReLU(), LocalResponseNorm(**LRN_PAPER), MaxPool2d(3, 2),
        Conv2d(96, 256, 5, padding=2, groups=g, **kw), ReLU(),
        LocalResponseNorm(**LRN_PAPER), MaxPool2d(3, 2),
        Conv2d(256, 384, 3, padding=1, **kw), ReLU(),
        Conv2d(384, 384, 3, padding=1, groups=g, **kw), ReLU(),
        Conv2d(384, 256, 3, padding=1, groups=g, **kw), ReLU(),
        MaxPool2d(3, 2),
    )
    fh, fw = _features_size(h), _features_size(w)
    classifier = _classifier(256 * fh * fw, hidden, num_classes, dropout, kw)
    return network([("features", features), ("flatten", Flatten()),
                    ("classifier", classifier)])


def _classifier(in_features, hidden, num_classes, dropout, kw):
    """Dropout, FC, ReLU, dropout, FC, ReLU, FC (both AlexNets' keys
    classifier.1, .4, .6)."""
    drop_rng = kw["rng"]
    return Sequential(
        Dropout(dropout, rng=drop_rng), Linear(in_features, hidden, **kw), ReLU(),
        Dropout(dropout, rng=drop_rng), Linear(hidden, hidden, **kw), ReLU(),
        Linear(hidden, num_classes, **kw),
    )


def alexnet_torchvision(num_classes: int = 1000, in_channels: int = 3,
                        input_size: IntOrPair = 224, dropout: float = 0.5, *, rng: Seed = None,
                        dtype: DTypeLike = "float32") -> Sequential:
    """torchvision's AlexNet (its keys and shapes, see the module docstring);
    any input of at least 63x63 (the average pool makes the classifier's
    input 6x6 whatever the map)."""
    fn = "alexnet_torchvision"
    num_classes, in_channels, _ = check_common(fn, num_classes, in_channels, input_size, 63)
    kw = layer_kwargs(rng, dtype)
    conv1 = Conv2d(in_channels, 64, 11, stride=4, padding=2, **kw)
    conv1.first_layer = True
    features = Sequential(
        conv1, ReLU(), MaxPool2d(3, 2),
        Conv2d(64, 192, 5, padding=2, **kw), ReLU(), MaxPool2d(3, 2),
        Conv2d(192, 384, 3, padding=1, **kw), ReLU(),
        Conv2d(384, 256, 3, padding=1, **kw), ReLU(),
        Conv2d(256, 256, 3, padding=1, **kw), ReLU(),
        MaxPool2d(3, 2),
    )
    return network([("features", features), ("avgpool", AdaptiveAvgPool2d(6)),
                    ("flatten", Flatten()),
                    ("classifier", _classifier(256 * 6 * 6, 4096, num_classes, dropout, kw))])

