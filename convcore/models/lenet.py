"""LeNet-5 (LeCun et al. 1998), the seeds' table:

    input 32x32 -> C1 conv 6@5x5 -> S2 avg pool 2 -> C3 conv 16@5x5 -> S4 avg pool 2
    -> C5 conv 120@5x5 (1x1 output) -> F6 FC 84 -> output FC 10, tanh between

Differences from the paper, as in every modern re-implementation: C3 is
fully connected to S2 (the paper's sparse connection table saves 1,000
weights), S2/S4 are plain average pools without the trainable coefficient
and bias, and the output is a linear layer for softmax cross entropy
instead of RBF units. Parameters: 61,706 at 10 classes (the paper's
"60,000 trainable parameters").

Other input sizes: 28x28 (MNIST) pads C1 by 2, exactly as the paper
centred 28x28 digits in a 32x32 field; any size >= 16 keeps the 5x5
kernels (C1 padded up to 32 when smaller) and gives C5 a kernel equal to
the remaining map, so C5 still sees the whole image; sizes below 16 (the
8x8 embedded digits) use the scaled-down variant: 3x3 kernels padded by 1,
S2 dropped (8x8 halved twice would leave C5 a 2x2 map; with one pool it
sees 4x4, as C5 sees 5x5 in the original), C5 over the 4x4 map.

`channels` widens C1 and C3 (the paper's 6 and 16). lenet_digits is the
default network of `convcore train`: the 8x8 variant with ReLU, max pool
and 32/64 channels, which reaches about 98.5% on the held-out digits where
the paper's widths with tanh stop near 97%.
"""

from __future__ import annotations

from typing import Tuple

from numpy.typing import DTypeLike

from convcore.utils.validation import check_int
from convcore.nn import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, Tanh
from convcore.models._common import check_common, conv_out, layer_kwargs, network
from convcore.utils.types import IntOrPair, Seed

_ACTIVATIONS = {"tanh": Tanh, "relu": ReLU}
_POOLS = {"avg": AvgPool2d, "max": MaxPool2d}


def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: IntOrPair = 32,
           activation: str = "tanh", pool: str = "avg", channels: Tuple[int, int] = (6, 16), *,
           rng: Seed = None, dtype: DTypeLike = "float32") -> Sequential:
    """LeNet-5 as a Sequential with torch-style names (c1, s2, c3, s4, c5,
    f6, output).

    activation : "tanh" (the paper) or "relu"
    pool : "avg" (the paper's subsampling) or "max"
    input_size : int or (h, w); 32 is the paper's, 28 pads C1 by 2, sizes
        below 16 use the scaled-down 3x3 variant without S2 (8x8 digits)
    channels : (C1, C3) output channels
    rng : Generator or int seed for the initial weights (None: convcore's
        default generator)
    """
    fn = "lenet5"
    num_classes, in_channels, (h, w) = check_common(fn, num_classes, in_channels, input_size, 4)
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{fn}: activation must be one of {sorted(_ACTIVATIONS)}, "
                         f"got {activation!r}")
    if pool not in _POOLS:
        raise ValueError(f"{fn}: pool must be one of {sorted(_POOLS)}, got {pool!r}")
    c1_out, c3_out = (check_int(c, "channels", 1, fn) for c in channels)
    kw = layer_kwargs(rng, dtype)
    act, pool_layer = _ACTIVATIONS[activation], _POOLS[pool]
    small = min(h, w) < 16
    if small:
        kernel, pad = 3, (1, 1)
    else:
        kernel = 5
        # pad C1 so the map is at least 32 wide, as the paper's 32x32 field
        pad = tuple(max(0, (32 - s + 1) // 2) for s in (h, w))
    c3_pad = 1 if small else 0
    # spatial size left for C5, so its kernel covers the whole map
    rest = []
    for s, p in zip((h, w), pad):
        s = conv_out(s, kernel, 1, p)
        if not small:
            s = conv_out(s, 2, 2)
        rest.append(conv_out(conv_out(s, kernel, 1, c3_pad), 2, 2))
    if min(rest) < 1:
        raise ValueError(f"{fn}: input_size {(h, w)} leaves no map for C5")
    c1 = Conv2d(in_channels, c1_out, kernel, padding=pad, **kw)
    c1.first_layer = True  # nothing needs the gradient of the input images
    front = [("c1", c1), ("act1", act())] + ([] if small else [("s2", pool_layer(2))])
    return network(front + [
        ("c3", Conv2d(c1_out, c3_out, kernel, padding=c3_pad, **kw)), ("act3", act()),
        ("s4", pool_layer(2)),
        ("c5", Conv2d(c3_out, 120, tuple(rest), **kw)), ("act5", act()),
        ("flatten", Flatten()),
        ("f6", Linear(120, 84, **kw)), ("act6", act()),
        ("output", Linear(84, num_classes, **kw)),
    ])


def lenet_digits(num_classes: int = 10, in_channels: int = 1, input_size: IntOrPair = 8, *,
                 rng: Seed = None, dtype: DTypeLike = "float32") -> Sequential:
    """The default network of `convcore train`: lenet5's 8x8 variant with
    ReLU, max pooling and 32/64 channels (152,830 parameters)."""
    return lenet5(num_classes, in_channels, input_size, "relu", "max", (32, 64), rng=rng,
                  dtype=dtype)
