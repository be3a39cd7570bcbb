"""The registry of algorithms by name, and the choice made by "auto"
(`select_algorithm`, exposed so tests and the benchmark see what it picks).
"""
import math

from convcore.algorithms import autotune
from convcore.algorithms.base import _REGISTRY
from convcore.algorithms.direct import DirectConv
from convcore.algorithms.im2col import Im2colConv
from convcore.algorithms.winograd import WinogradConv

_REGISTRY.update({cls.name: cls() for cls in (DirectConv, Im2colConv, WinogradConv)})


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
    - 3x3 stride 1 with at least 8 channels: Winograd, which does fewer
      multiplies (F(4x4, 3x3): 36 where im2col does 144; F(2x2, 3x3), for
      dilated layers: 16 where im2col does 36) but pays for its transforms
      per tile and per call, so it needs work on both sides of its GEMMs,
      on the scale min(C/groups, K/groups) * sqrt(OH*OW). With fewer
      channels the transforms outweigh the GEMMs.
      Undilated: from 100, with at least 1024 output pixels in the batch
      (else the per-call weight transform dominates). From 256 channels
      also images of at least 14x14 and 1568 pixels in the batch: smaller,
      im2col's GEMMs split over the threads (blas.gemm_split) win.
      Dilated: from 400, when each dilation phase of the output (which the
      kernel tiles in place) is at least 8 pixels across; shorter tile
      rows lose.
    - everything else: im2col + GEMM, which runs near the BLAS's speed
      once Cg*R*S and K/groups are a few dozen.

    With CONVCORE_AUTOTUNE=1 a measured winner (convcore.algorithms.autotune,
    cached on disk per shape) overrides these rules.
    """
    measured = autotune.measured_choice(spec)
    if measured is not None:
        return _REGISTRY[measured]
    if spec.Cg == 1 and spec.groups > 1:
        return _REGISTRY["direct"]
    channels = min(spec.Cg, spec.Kg)
    if channels >= 8 and _REGISTRY["winograd"].supports(spec)[0]:
        score = channels * math.sqrt(spec.OH * spec.OW)
        pixels = spec.N * spec.OH * spec.OW
        if spec.dilation == (1, 1):
            tiles = spec.N * ((spec.OH + 3) // 4) * ((spec.OW + 3) // 4)
            if weights_reused and score >= 100 and 8 * tiles >= channels:
                return _REGISTRY["winograd"]
            if channels >= 256:
                big = spec.OH * spec.OW >= 196 and pixels >= 1568
            else:
                big = pixels >= 1024
            if score >= 100 and big:
                return _REGISTRY["winograd"]
        elif score >= 400 and min(spec.OH // spec.dilation[0], spec.OW // spec.dilation[1]) >= 8:
            return _REGISTRY["winograd"]
    return _REGISTRY["im2col"]


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
