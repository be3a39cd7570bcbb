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
"""

from convcore.utils.validation import check_int
from convcore.nn import (Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool2d, ReLU,
                         Sequential)
from convcore.models._common import check_common, conv_out, layer_kwargs, network

LRN_PAPER = dict(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)


def _features_size(s):
    s = conv_out(s, 11, 4)
    s = conv_out(s, 3, 2)
    s = conv_out(s, 3, 2)       # conv2 keeps the size (pad 2)
    return conv_out(s, 3, 2)    # conv3-5 keep it (pad 1)


def alexnet(num_classes=1000, in_channels=3, input_size=227, dropout=0.5, towers=1,
            hidden=4096, *, rng=None, dtype="float32"):
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
    drop_rng = kw["rng"]
    classifier = Sequential(
        Dropout(dropout, rng=drop_rng), Linear(256 * fh * fw, hidden, **kw), ReLU(),
        Dropout(dropout, rng=drop_rng), Linear(hidden, hidden, **kw), ReLU(),
        Linear(hidden, num_classes, **kw),
    )
    return network([("features", features), ("flatten", Flatten()),
                    ("classifier", classifier)])
