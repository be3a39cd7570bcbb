"""The registry of algorithms by name, and the choice made by "auto"
(`select_algorithm`, exposed so tests and the benchmark see what it picks).
"""
import math
from typing import Dict, Tuple

import numpy as np

from convcore._kernels import conv_direct
from convcore._runtime.threads import conv_threads
from convcore.algorithms import autotune
from convcore.algorithms.base import _REGISTRY, ConvAlgorithm
from convcore.algorithms.direct import DirectConv
from convcore.algorithms.im2col import Im2colConv
from convcore.algorithms.winograd import WinogradConv

_REGISTRY.update({cls.name: cls() for cls in (DirectConv, Im2colConv, WinogradConv)})


class PerPassConv(ConvAlgorithm):
    """"auto"'s choice for a layer whose passes are best run by different
    algorithms: the forward by one, backward-data by another, the weight
    gradient by a third. Every algorithm accepts the arguments of every
    other and gives the same result to rounding, so any mix does too. Its
    name lists the three ("auto(direct, direct, winograd)")."""

    def __init__(self, forward, data, weight):
        self.parts = (forward, data, weight)
        self.name = f"auto({forward.name}, {data.name}, {weight.name})"

    def forward(self, x, w, bias, y, spec, weight_version=None):
        self.parts[0].forward(x, w, bias, y, spec, weight_version)

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        _, data, weight = self.parts
        if need_x and need_w and data is weight:
            data.backward(grad_y, x, w, grad_x, grad_w, True, True, spec, weight_version)
            return
        if need_x:
            data.backward(grad_y, x, w, grad_x, grad_w, True, False, spec, weight_version)
        if need_w:
            weight.backward(grad_y, x, w, grad_x, grad_w, False, True, spec, weight_version)

    def scratch_bytes(self, spec, backward):
        if not backward:
            return self.parts[0].scratch_bytes(spec, False)
        return max(part.scratch_bytes(spec, True) for part in self.parts[1:])


# Blocked direct kernels (conv_direct.blocked): small images over few
# channels, where im2col's GEMMs are thin and Winograd's transforms cost
# more than its products save (benchmarks/results/auto_choice.md): while
# C * sqrt(OH*OW) / fill**2 < DIRECT_MAX_SCORE, fill the share of the
# kernel's output vectors that rows of OW pixels use.
DIRECT_MAX_SCORE = 1000
DIRECT_MAX_OUT_CHANNELS = 128
# Few-channel layers on bigger images (a first layer at 112x112 or
# 224x224) run faster through im2col's small-GEMM pieces.
DIRECT_MAX_PIXELS = 2304
# The blocked kernels' baseline instance (4-lane vectors: no AVX2) ran
# 3-4x slower than the AVX-512 one here: "auto" takes them from AVX2 up.
DIRECT_MIN_VECTOR = 8
# Weight gradients of layers this thin (C/groups*R*S, the im2col GEMM's
# output width) run faster on the direct kernels, from this many filters.
DIRECT_WEIGHT_MAX_COLUMNS = 32
DIRECT_WEIGHT_MIN_FILTERS = 16
# From 32 channels, Winograd's forward (its weights transformed per call)
# overtakes the direct kernels once a call has this much work, C times the
# output pixels of the batch (32 channels at 16x16 from batch 24, 48
# channels from batch 16): its transform's cost per call is then shared
# by enough tiles.
WINOGRAD_OVER_DIRECT_CHANNELS = 32
WINOGRAD_OVER_DIRECT_WORK = 196608
# From 256 channels Winograd's GEMMs are big enough from this many 4x4
# tiles per thread, on images whose pixels fill at least this share of
# their tiles (a 5x5 image takes 8x8 of tiles, and never paid):
# benchmarks/results/auto_choice.md.
WINOGRAD_TILES_PER_THREAD = 24
WINOGRAD_MIN_TILE_FILL = 0.5
# Below 1024 output pixels in the batch, from this many channels Winograd
# pays too when the same tiles-per-thread count is met on images that fill
# at least this share of their tiles (small batches of 14x14-28x28 images).
WINOGRAD_FEW_PIXELS_CHANNELS = 96
WINOGRAD_FEW_PIXELS_FILL = 0.75
# Strided layers go to Winograd (over their input's stride phases) only
# when the kernel fills at least this share of the 3x3 phase kernels'
# taps (AlexNet's 11x11 stride 4: 121 of 144; 5x5 stride 2, 25 of 36,
# lost most passes to im2col), with at least this many phase channels and
# filters (AlexNet's 48 and 64-96 won every pass from batch 8; 48 into 32
# filters lost its forward).
WINOGRAD_MIN_PHASE_TAPS = 0.8
WINOGRAD_MIN_PHASE_CHANNELS = 48
# The channel-vector direct kernel (conv_direct.channel_vector: small
# images, from a tile of images) runs the forward and backward-data of
# layers wider than 1x1 with at least this many channels in and out, whose
# batch has at least SMALL_MIN_PIXELS output pixels (fewer repack the
# weights for too little work); where Winograd would run them instead,
# only below SMALL_OVER_WINOGRAD_PIXELS, or below twice that on images
# Winograd's 4x4 tiles fill to at most SMALL_SPARSE_TILE_FILL (3x3, 5x5,
# 6x6): beyond, its fewer multiplies win (benchmarks/results/auto_choice.md).
SMALL_MIN_CHANNELS = 64
SMALL_MIN_PIXELS = 64
# ... and batches that fill at least this share of its tiles of images
# (9 images in two tiles of 8 lost to im2col by up to 1.27x, 12 won).
SMALL_MIN_TILE_FILL = 0.75
# Its AVX2 instance ran 1.1-1.25x slower than the AVX-512 one on the same
# (AVX-512) machine and was not measured against an AVX2 BLAS: the rule
# takes the kernel on AVX-512 CPUs only.
SMALL_MIN_VECTOR = 16
SMALL_OVER_WINOGRAD_PIXELS = 1024
SMALL_SPARSE_TILE_FILL = 0.6


def conv_algorithms():
    """Names accepted as `algorithm=`: every registered one, and "auto"."""
    return tuple(_REGISTRY) + ("auto",)


def supported_algorithms(spec):
    """Names usable for this checked ConvSpec ("auto" always is)."""
    return tuple(name for name, algo in _REGISTRY.items() if algo.supports(spec)[0]) + ("auto",)


def select_algorithm(spec, weights_reused=False):
    """The "auto" rule. Each threshold was measured against im2col; the
    numbers are in benchmarks/results/auto_choice.md.

    weights_reused: the caller will convolve with these same weights again
    (inference through a layer: a weight version given, gradients off), so
    Winograd's transformed weights are cached and its forward costs only
    its GEMMs and data transforms. It then wins from fewer pixels and at
    every size of image, as long as the tiles of one call are enough to
    pay for reading the transformed weights (36 per filter, im2col reads
    9): at least one tile per 8 channels.

    - depthwise-like (one input channel per group, several groups): the
      direct kernel. A GEMM per group would be (Kg x R*S) @ (R*S x P), too
      thin for the BLAS to pay for the im2col copy and per-call overhead.
      A single-channel image (groups 1: a grayscale network's first
      layer) is one GEMM over all the filters, and im2col wins.
    - float32, stride 1, undilated, groups 1, a 3x3 kernel or larger, at
      least 3 input and 8 to 128 output channels, and few channels over
      small images: C * sqrt(OH*OW) / fill**2 < 1000, fill the share of
      the direct kernel's vector lanes that output rows fill (16 channels
      up to 40x40-48x48, 32 channels at 16x16, not 32 channels on 8x8
      images, which fill half a vector), on images of at most 48x48 (a
      first layer at 112x112 runs faster through im2col), and, from 32
      channels, less than C * N*OH*OW = 196608 (beyond, Winograd's
      per-call transforms are paid for). The blocked
      direct kernels then run the forward and backward-data (ResNet-20,
      LeNet's second layer, GoogLeNet's 5x5 branches): im2col's GEMMs are
      thin there and Winograd's transforms cost more than its products
      save; the direct kernel keeps a block of outputs in registers. Its
      weight gradient sums in registers too, but with one thread's blocks
      over every image it reads the images once per thread: it wins only
      where the im2col weight gradient is a thin GEMM (C/groups*R*S up to
      32: first layers, from 16 filters). Where the passes' choices differ,
      "auto" runs a PerPassConv of them. On CPUs without AVX2 the direct
      kernels' baseline instance is too slow for this rule: not taken.
    - small images over many channels, on AVX-512 CPUs (float32, groups
      1, a kernel wider than 1x1, at least 64 channels in and out, a tile
      of images, outputs up to 6x6, or 8x8 from 64 channels; at stride 1
      10x10 from 64 channels and 14x14 from 128:
      conv_direct.channel_vector):
      the channel-vector direct kernel runs the forward (any stride) and
      backward-data (stride 1), from SMALL_MIN_PIXELS output pixels in the
      batch and batches that fill 3/4 of its tiles of 8 images. It reads only the taps that land inside the image, where
      im2col's GEMM multiplies the zero padding too (40% of a 3x3 image's
      pairs, 31% of a 4x4's). Where Winograd is the other choice, only
      below SMALL_OVER_WINOGRAD_PIXELS (twice that on images Winograd's 4x4
      tiles fill to at most 60%) and not with its weights cached. The
      weight gradient stays the other algorithm's.
    - 3x3 stride 1 with at least 8 channels: Winograd, which does fewer
      multiplies (F(4x4, 3x3): 36 where im2col does 144; F(2x2, 3x3), for
      dilated layers: 16 where im2col does 36) but pays for its transforms
      per tile and per call, so it needs work on both sides of its GEMMs,
      on the scale min(C/groups, K/groups) * sqrt(OH*OW). With fewer
      channels the transforms outweigh the GEMMs.
      Undilated: from 100, with at least 1024 output pixels in the batch
      (else the per-call weight transform dominates), or, from 96
      channels, at least 24 tiles per thread of the call on images that
      fill 3/4 of their 4x4 tiles (a 28x28 image at batch 1 on 2
      threads; with 64 channels that lost). From 256 channels, the 24
      tiles per thread instead (7x7 images from batch 12 at 2 threads,
      batch 6 at 1), on images the 4x4 tiles cover at least half (not
      5x5 in 8x8 of tiles): fewer, and im2col's GEMMs split over the
      threads (blas.gemm_split) win.
      Dilated: from 400, when each dilation phase of the output (which the
      kernel tiles in place) is at least 8 pixels across; shorter tile
      rows lose.
    - strided, undilated kernels spanning 3 taps per stride phase (11x11
      at stride 4, 9x9 at stride 3): Winograd, by the stride-1 rule above
      applied to the 3x3 convolution over the input's stride phases, when
      the kernel fills at least 80% of its taps (not 5x5 at stride 2,
      25 of 36) and that convolution has at least 48 channels in and out
      (AlexNet's conv1: 3 x 16 phases, 64 or 96 filters).
    - everything else: im2col + GEMM, which runs near the BLAS's speed
      once Cg*R*S and K/groups are a few dozen.

    With CONVCORE_AUTOTUNE=1 a measured winner (convcore.algorithms.autotune,
    cached on disk per shape) overrides these rules.
    """
    measured = autotune.measured_choice(spec)
    if measured is not None:
        return _REGISTRY[measured]
    if spec.is_depthwise:
        return _REGISTRY["direct"]
    blocked = (spec.groups == 1 and spec.R * spec.S >= 9
               and conv_direct.vector_width() >= DIRECT_MIN_VECTOR
               and conv_direct.blocked(spec.params, spec.dtype.itemsize))
    # forward and backward-data (the forward of grad_y, K channels in)
    direct = (blocked and spec.C >= 3 and 8 <= spec.K <= DIRECT_MAX_OUT_CHANNELS
              and spec.OH * spec.OW <= DIRECT_MAX_PIXELS
              and _direct_score(spec) < DIRECT_MAX_SCORE
              and not (spec.C >= WINOGRAD_OVER_DIRECT_CHANNELS
                       and spec.C * spec.N * spec.OH * spec.OW >= WINOGRAD_OVER_DIRECT_WORK))
    direct_weight = (blocked and spec.C * spec.R * spec.S <= DIRECT_WEIGHT_MAX_COLUMNS
                     and spec.K >= DIRECT_WEIGHT_MIN_FILTERS)
    other = _gemm_or_winograd(spec, weights_reused)
    small_forward = _small_images_direct(spec, other, weights_reused, False)
    small_data = _small_images_direct(spec, other, weights_reused, True)
    if not (direct or direct_weight or small_forward or small_data):
        return other
    forward = _REGISTRY["direct"] if direct or small_forward else other
    data = _REGISTRY["direct"] if direct or small_data else other
    weight = _REGISTRY["direct"] if direct_weight else other
    if forward is data is weight:
        return forward
    return _per_pass(forward, data, weight)


def _small_images_direct(spec, other, weights_reused, data):
    """Whether the forward (data False) or backward-data pass runs the
    channel-vector direct kernel rather than `other` (select_algorithm's
    small-images case)."""
    if (spec.dtype != np.float32 or spec.R * spec.S == 1
            or conv_direct.vector_width() < SMALL_MIN_VECTOR):
        return False  # 1x1: a plain GEMM, no padding to skip, is faster
    if not conv_direct.channel_vector(spec.params, 4, data):
        return False
    pixels = spec.N * spec.OH * spec.OW
    if min(spec.Cg, spec.Kg) < SMALL_MIN_CHANNELS or pixels < SMALL_MIN_PIXELS:
        return False
    tile = conv_direct.channel_vector_images()
    if spec.N < SMALL_MIN_TILE_FILL * (-(-spec.N // tile) * tile):
        return False
    if other.name == "winograd":
        if weights_reused:  # its transformed weights cached: not weighed here
            return False
        sparse = _winograd_tile_fill(spec) <= SMALL_SPARSE_TILE_FILL
        return pixels < SMALL_OVER_WINOGRAD_PIXELS * (2 if sparse else 1)
    return True


def _winograd_tile_fill(spec):
    """The share of its 4x4 output tiles' pixels that an image fills."""
    return spec.OH * spec.OW / (16 * WinogradConv.image_tiles("winograd_f4", spec.OH, spec.OW))


def _direct_score(spec):
    """C * sqrt(OH*OW) / fill**2: the work Winograd's GEMMs would have
    (it gains on the direct kernel with channels and image size), over the
    square of the share of the direct kernel's vector lanes that the
    output's rows fill (8-pixel rows use half of a 16-lane vector)."""
    width = conv_direct.vector_width()
    fill = spec.OW / (-(-spec.OW // width) * width)
    return spec.C * math.sqrt(spec.OH * spec.OW) / fill ** 2


_PER_PASS: Dict[Tuple[str, str, str], PerPassConv] = {}


def _per_pass(forward, data, weight):
    """One PerPassConv per combination (plans and memory checks key on its
    name)."""
    key = (forward.name, data.name, weight.name)
    if key not in _PER_PASS:
        _PER_PASS[key] = PerPassConv(forward, data, weight)
    return _PER_PASS[key]


def _gemm_or_winograd(spec, weights_reused):
    """The rule between im2col and Winograd (select_algorithm's second and
    third cases)."""
    if not _REGISTRY["winograd"].supports(spec)[0]:
        return _REGISTRY["im2col"]
    if spec.stride != (1, 1):
        # Winograd runs a 3x3 stride-1 convolution over the input's stride
        # phases (C * stride^2 channels), whose kernel pads R x S to
        # 3*stride square: weighed as that one, where little of it is
        # padding.
        taps = spec.R * spec.S / (9 * spec.stride[0] * spec.stride[1])
        spec = WinogradConv._run_spec(spec)
        if taps < WINOGRAD_MIN_PHASE_TAPS or min(spec.Cg, spec.Kg) < WINOGRAD_MIN_PHASE_CHANNELS:
            return _REGISTRY["im2col"]
    channels = min(spec.Cg, spec.Kg)
    if channels >= 8:
        score = channels * math.sqrt(spec.OH * spec.OW)
        pixels = spec.N * spec.OH * spec.OW
        if spec.dilation == (1, 1):
            image_tiles = WinogradConv.image_tiles("winograd_f4", spec.OH, spec.OW)
            tiles = spec.N * image_tiles
            # Alone, 256 channels at 14x14 at batch 1 (16 tiles) run faster
            # through Winograd with cached weights; inside ResNet-50, where
            # several such layers' transformed weights take turns in the
            # caches, they did not (commit body): one tile per 8 channels
            # stays the rule.
            if weights_reused and score >= 100 and 8 * tiles >= channels:
                return _REGISTRY["winograd"]
            if channels >= 256:
                big = _tiles_pay(spec, tiles, WINOGRAD_MIN_TILE_FILL)
            else:
                big = pixels >= 1024 or (channels >= WINOGRAD_FEW_PIXELS_CHANNELS
                                         and _tiles_pay(spec, tiles, WINOGRAD_FEW_PIXELS_FILL))
            if score >= 100 and big:
                return _REGISTRY["winograd"]
        elif score >= 400 and min(spec.OH // spec.dilation[0], spec.OW // spec.dilation[1]) >= 8:
            return _REGISTRY["winograd"]
    return _REGISTRY["im2col"]


def _tiles_pay(spec, tiles, min_fill):
    """Winograd's `tiles` 4x4 tiles are enough for the call's threads
    (WINOGRAD_TILES_PER_THREAD each), on images that fill at least
    `min_fill` of their tiles."""
    return (tiles >= WINOGRAD_TILES_PER_THREAD * conv_threads(spec)
            and _winograd_tile_fill(spec) >= min_fill)


def get_algorithm(name, spec, fn="conv2d", weights_reused=False):
    """The algorithm object for `name`, checked against `spec`
    (weights_reused: as select_algorithm's, for "auto")."""
    if not isinstance(name, str):
        raise TypeError(f"{fn}: algorithm must be a string, one of "
                        f"{conv_algorithms()}, got {name!r}")
    if name == "auto":
        return select_algorithm(spec, weights_reused)
    algo = _REGISTRY.get(name)
    if algo is None:
        raise ValueError(f"{fn}: unknown algorithm {name!r}; choose from "
                         f"{conv_algorithms()}")
    ok, why = algo.supports(spec)
    if not ok:
        raise ValueError(f"{fn}: algorithm {name!r} does not support this "
                         f"configuration: {why}")
    return algo
