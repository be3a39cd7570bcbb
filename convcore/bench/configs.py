"""What the benchmark measures: one convolution layer per `BenchConfig`,
grouped into presets (parameter grids) and suites (real network layers).

The layer tables are written out here rather than read from
convcore.models so the benchmark does not depend on the model zoo: each
row is a layer of the published architecture at its real input size,
with `count` = how many times the same shape occurs in the network (so a
suite's weighted sum is the network's convolution time).
"""
import itertools
from dataclasses import asdict, dataclass, replace

import numpy as np

from convcore.functional._conv_spec import conv_spec


@dataclass(frozen=True)
class BenchConfig:
    """One convolution to time: input (N, C, H, W), weight (K, C/groups, R, S)."""
    name: str
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: int = 1
    padding: object = 0          # int or "same"
    dilation: int = 1
    groups: int = 1
    suite: str = "custom"
    count: int = 1               # occurrences of this shape in its network

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self):
        return (self.K, self.C // self.groups, self.R, self.S)

    def spec(self, dtype):
        """The checked ConvSpec (ValueError when the configuration is invalid)."""
        return conv_spec(self.x_shape, self.w_shape, np.dtype(dtype), self.stride,
                         self.padding, self.dilation, self.groups, fn="bench")

    def is_valid(self):
        try:
            self.spec(np.float32)
        except ValueError:
            return False
        return True

    def params(self):
        """Plain dict of the shape and parameters (for JSON/CSV)."""
        d = asdict(self)
        d["depthwise"] = self.groups > 1 and self.groups == self.C == self.K
        return d


# ---------------------------------------------------------------------------
# Parameter grids: stride x padding x dilation x kernel x groups

GRID_AXES = {
    "stride": (1, 2, 3),
    "padding": (0, 1, 2, "same"),
    "dilation": (1, 2, 3),
    "kernel": (1, 3, 5, 7),
    "groups": ("1", "dw"),          # "dw": depthwise, groups = C = K
}


def _grid_name(stride, padding, dilation, kernel, groups):
    return f"k{kernel} s{stride} p{padding} d{dilation} {'dw' if groups == 'dw' else 'g' + str(groups)}"


def grid_configs(axes=None, batch=8, channels=32, size=24, suite="grid"):
    """Every valid combination of the axes (defaults: GRID_AXES) on one base
    shape. Invalid ones ('same' with stride > 1, a dilated kernel larger
    than the padded input) are left out, as conv2d would refuse them."""
    axes = {**GRID_AXES, **(axes or {})}
    out = []
    for k, s, p, d, g in itertools.product(axes["kernel"], axes["stride"],
                                           axes["padding"], axes["dilation"],
                                           axes["groups"]):
        groups = channels if g == "dw" else int(g)
        if channels % groups:
            continue
        cfg = BenchConfig(_grid_name(s, p, d, k, g), batch, channels, size, size,
                          channels, k, k, stride=s, padding=p, dilation=d,
                          groups=groups, suite=suite)
        if cfg.is_valid():
            out.append(cfg)
    return out


def sample_configs(configs, n, seed=0):
    """n configurations that together cover every value of every axis
    (greedy: a configuration bringing the most unseen values first), then
    filled at random. Deterministic for a seed; order of the input kept."""
    if n >= len(configs):
        return list(configs)
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(configs)))

    def values(c):
        return {("k", c.R), ("s", c.stride), ("p", c.padding), ("d", c.dilation),
                ("g", c.groups > 1)}

    seen, chosen = set(), []
    while len(chosen) < n:
        gains = [(len(values(configs[i]) - seen), -pos) for pos, i in enumerate(order)]
        best = max(range(len(order)), key=lambda j: gains[j])
        if gains[best][0] == 0:
            break
        i = order.pop(best)
        chosen.append(i)
        seen |= values(configs[i])
    chosen += order[:n - len(chosen)]
    return [configs[i] for i in sorted(chosen)]


# (batch, channels, size) of the grid presets. 20x20 is the smallest size
# where the largest dilated kernel (7, dilation 3: extent 19) still fits.
QUICK_SHAPE = (4, 32, 20)
FULL_SHAPE = (8, 32, 32)
QUICK_COUNT = 24


def quick_configs():
    """--quick: 24 sampled grid points on a small shape (runs in well under
    a minute on 2 cores, PyTorch included)."""
    batch, channels, size = QUICK_SHAPE
    return sample_configs(grid_configs(batch=batch, channels=channels, size=size,
                                       suite="quick"), QUICK_COUNT)


def full_configs():
    """--full: the whole grid (240 valid points) on a mid-size shape."""
    batch, channels, size = FULL_SHAPE
    return grid_configs(batch=batch, channels=channels, size=size, suite="full")


# ---------------------------------------------------------------------------
# Layers of real networks: (name, C, K, size, kernel, stride, padding,
# dilation, groups, count); square inputs of `size`.

def _layers(suite, batch, rows):
    return [BenchConfig(f"{suite}.{name}", batch, C, size, size, K, k, k, stride=s,
                        padding=p, dilation=d, groups=g, suite=suite, count=n)
            for name, C, K, size, k, s, p, d, g, n in rows]


# The reference layer grid: nine layers that span the shapes a CNN meets
# (3x3 at two widths, strided, 1x1, a 7x7 stem, dilated, LeNet's 5x5,
# AlexNet's 11x11 stem, depthwise), each at a batch typical of its network.
# First written as the performance targets of issue 7, hence the alias.
LAYER_GRID = [
    ("1.3x3-64-32", 32, (64, 64, 32, 3, 1, 1, 1, 1)),
    ("2.3x3-128-16", 32, (128, 128, 16, 3, 1, 1, 1, 1)),
    ("3.3x3s2-64-128", 32, (64, 128, 32, 3, 2, 0, 1, 1)),
    ("4.1x1-256-64", 32, (256, 64, 16, 1, 1, 0, 1, 1)),
    ("5.7x7s2-3-64-224", 8, (3, 64, 224, 7, 2, 3, 1, 1)),
    ("6.3x3d2-64-32", 32, (64, 64, 32, 3, 1, 2, 2, 1)),
    ("7.5x5-6-16-lenet", 128, (6, 16, 14, 5, 1, 0, 1, 1)),
    ("8.11x11s4-alexnet", 8, (3, 96, 227, 11, 4, 0, 1, 1)),
    ("9.dw3x3-128-32", 32, (128, 128, 32, 3, 1, 1, 1, 128)),
]


def layer_grid_configs():
    return [BenchConfig(f"layers.{name}", N, C, size, size, K, k, k, stride=s,
                        padding=p, dilation=d, groups=g, suite="layers")
            for name, N, (C, K, size, k, s, p, d, g) in LAYER_GRID]


# LeNet-5 (LeCun et al. 1998) on 32x32 inputs.
LENET5 = [
    ("c1", 1, 6, 32, 5, 1, 0, 1, 1, 1),
    ("c3", 6, 16, 14, 5, 1, 0, 1, 1, 1),
    ("c5", 16, 120, 5, 5, 1, 0, 1, 1, 1),
]

# AlexNet (Krizhevsky et al. 2012) on 227x227, with its two-GPU groups.
ALEXNET = [
    ("conv1", 3, 96, 227, 11, 4, 0, 1, 1, 1),
    ("conv2", 96, 256, 27, 5, 1, 2, 1, 2, 1),
    ("conv3", 256, 384, 13, 3, 1, 1, 1, 1, 1),
    ("conv4", 384, 384, 13, 3, 1, 1, 1, 2, 1),
    ("conv5", 384, 256, 13, 3, 1, 1, 1, 2, 1),
]

# VGG-16 (configuration D) on 224x224: every conv is 3x3, padding 1.
VGG16 = [
    ("conv1_1", 3, 64, 224, 3, 1, 1, 1, 1, 1),
    ("conv1_2", 64, 64, 224, 3, 1, 1, 1, 1, 1),
    ("conv2_1", 64, 128, 112, 3, 1, 1, 1, 1, 1),
    ("conv2_2", 128, 128, 112, 3, 1, 1, 1, 1, 1),
    ("conv3_1", 128, 256, 56, 3, 1, 1, 1, 1, 1),
    ("conv3_2", 256, 256, 56, 3, 1, 1, 1, 1, 2),
    ("conv4_1", 256, 512, 28, 3, 1, 1, 1, 1, 1),
    ("conv4_2", 512, 512, 28, 3, 1, 1, 1, 1, 2),
    ("conv5_1", 512, 512, 14, 3, 1, 1, 1, 1, 3),
]


def _inception(name, C, size, b1, b3r, b3, b5r, b5, pool_proj):
    """The six convolutions of one Inception (v1) module."""
    return [
        (f"{name}.1x1", C, b1, size, 1, 1, 0, 1, 1, 1),
        (f"{name}.3x3reduce", C, b3r, size, 1, 1, 0, 1, 1, 1),
        (f"{name}.3x3", b3r, b3, size, 3, 1, 1, 1, 1, 1),
        (f"{name}.5x5reduce", C, b5r, size, 1, 1, 0, 1, 1, 1),
        (f"{name}.5x5", b5r, b5, size, 5, 1, 2, 1, 1, 1),
        (f"{name}.poolproj", C, pool_proj, size, 1, 1, 0, 1, 1, 1),
    ]


# GoogLeNet (Szegedy et al. 2014, table 1) on 224x224.
GOOGLENET = [
    ("conv1", 3, 64, 224, 7, 2, 3, 1, 1, 1),
    ("conv2reduce", 64, 64, 56, 1, 1, 0, 1, 1, 1),
    ("conv2", 64, 192, 56, 3, 1, 1, 1, 1, 1),
    *_inception("3a", 192, 28, 64, 96, 128, 16, 32, 32),
    *_inception("3b", 256, 28, 128, 128, 192, 32, 96, 64),
    *_inception("4a", 480, 14, 192, 96, 208, 16, 48, 64),
    *_inception("4b", 512, 14, 160, 112, 224, 24, 64, 64),
    *_inception("4c", 512, 14, 128, 128, 256, 24, 64, 64),
    *_inception("4d", 512, 14, 112, 144, 288, 32, 64, 64),
    *_inception("4e", 528, 14, 256, 160, 320, 32, 128, 128),
    *_inception("5a", 832, 7, 256, 160, 320, 32, 128, 128),
    *_inception("5b", 832, 7, 384, 192, 384, 48, 128, 128),
]

# ResNet-18 (He et al. 2016) on 224x224; "ds" is the 1x1 stride-2 shortcut.
RESNET18 = [
    ("conv1", 3, 64, 224, 7, 2, 3, 1, 1, 1),
    ("layer1.3x3", 64, 64, 56, 3, 1, 1, 1, 1, 4),
    ("layer2.0.3x3s2", 64, 128, 56, 3, 2, 1, 1, 1, 1),
    ("layer2.3x3", 128, 128, 28, 3, 1, 1, 1, 1, 3),
    ("layer2.0.ds", 64, 128, 56, 1, 2, 0, 1, 1, 1),
    ("layer3.0.3x3s2", 128, 256, 28, 3, 2, 1, 1, 1, 1),
    ("layer3.3x3", 256, 256, 14, 3, 1, 1, 1, 1, 3),
    ("layer3.0.ds", 128, 256, 28, 1, 2, 0, 1, 1, 1),
    ("layer4.0.3x3s2", 256, 512, 14, 3, 2, 1, 1, 1, 1),
    ("layer4.3x3", 512, 512, 7, 3, 1, 1, 1, 1, 3),
    ("layer4.0.ds", 256, 512, 14, 1, 2, 0, 1, 1, 1),
]

# ResNet-50 (torchvision's v1.5: the stride sits on the 3x3) on 224x224.
RESNET50 = [
    ("conv1", 3, 64, 224, 7, 2, 3, 1, 1, 1),
    ("layer1.0.1x1a", 64, 64, 56, 1, 1, 0, 1, 1, 1),
    ("layer1.1x1a", 256, 64, 56, 1, 1, 0, 1, 1, 2),
    ("layer1.3x3", 64, 64, 56, 3, 1, 1, 1, 1, 3),
    ("layer1.1x1b", 64, 256, 56, 1, 1, 0, 1, 1, 4),   # 3 expansions + shortcut
    ("layer2.0.1x1a", 256, 128, 56, 1, 1, 0, 1, 1, 1),
    ("layer2.0.3x3s2", 128, 128, 56, 3, 2, 1, 1, 1, 1),
    ("layer2.0.ds", 256, 512, 56, 1, 2, 0, 1, 1, 1),
    ("layer2.1x1a", 512, 128, 28, 1, 1, 0, 1, 1, 3),
    ("layer2.3x3", 128, 128, 28, 3, 1, 1, 1, 1, 3),
    ("layer2.1x1b", 128, 512, 28, 1, 1, 0, 1, 1, 4),
    ("layer3.0.1x1a", 512, 256, 28, 1, 1, 0, 1, 1, 1),
    ("layer3.0.3x3s2", 256, 256, 28, 3, 2, 1, 1, 1, 1),
    ("layer3.0.ds", 512, 1024, 28, 1, 2, 0, 1, 1, 1),
    ("layer3.1x1a", 1024, 256, 14, 1, 1, 0, 1, 1, 5),
    ("layer3.3x3", 256, 256, 14, 3, 1, 1, 1, 1, 5),
    ("layer3.1x1b", 256, 1024, 14, 1, 1, 0, 1, 1, 6),
    ("layer4.0.1x1a", 1024, 512, 14, 1, 1, 0, 1, 1, 1),
    ("layer4.0.3x3s2", 512, 512, 14, 3, 2, 1, 1, 1, 1),
    ("layer4.0.ds", 1024, 2048, 14, 1, 2, 0, 1, 1, 1),
    ("layer4.1x1a", 2048, 512, 7, 1, 1, 0, 1, 1, 2),
    ("layer4.3x3", 512, 512, 7, 3, 1, 1, 1, 1, 2),
    ("layer4.1x1b", 512, 2048, 7, 1, 1, 0, 1, 1, 3),
]

# suite name -> (layer table, default batch). Batches are small enough for
# a 2-core machine; --batch overrides them.
NETWORKS = {
    "lenet5": (LENET5, 64),
    "alexnet": (ALEXNET, 8),
    "vgg16": (VGG16, 2),
    "googlenet": (GOOGLENET, 4),
    "resnet18": (RESNET18, 8),
    "resnet50": (RESNET50, 4),
}

SUITES = ("quick", "full", "layers", "zoo", *NETWORKS)
# Old suite names still accepted (not listed in help): old commands work.
SUITE_ALIASES = {"issue7": "layers"}


def suite_name(name):
    """The suite `name` stands for (an old alias becomes its new name)."""
    return SUITE_ALIASES.get(name, name)


def suite_configs(name, batch=None):
    """The configurations of a named suite or preset (see SUITES); `batch`
    overrides the batch of layer suites."""
    name = suite_name(name)
    if name == "quick":
        return quick_configs()
    if name == "full":
        return full_configs()
    if name == "layers":
        cfgs = layer_grid_configs()
        return [replace(c, N=batch) for c in cfgs] if batch else cfgs
    if name == "zoo":
        return [c for net in NETWORKS for c in suite_configs(net, batch)]
    if name in NETWORKS:
        rows, default_batch = NETWORKS[name]
        return _layers(name, batch or default_batch, rows)
    raise ValueError(f"bench: unknown suite {name!r}; choose from {SUITES}")

