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


def select_algorithm(spec):
    """The "auto" rule, from single-thread measurements on an AVX2 machine
    (im2col/winograd time ratios over C in 3..128 and images 7..56, in the
    closing note of the Winograd change; benchmarks/ measures it again):

    - depthwise-like (one input channel per group): a GEMM per group would
      be (Kg x R*S) @ (R*S x P), too thin for the BLAS to pay for the
      im2col copy and per-call overhead; the direct kernel streams it.
    - 3x3 stride 1 with enough channels and pixels: Winograd. Undilated,
      F(4x4, 3x3) does 36 multiplies where im2col does 144. Measured
      against im2col on one thread (CPU time, forward and backward):
      0.34-0.92x from min(C/groups, K/groups) * sqrt(OH*OW) >= 128 (8
      channels at 16x16, 32 at 4x4, 128 at 2x2, 512 at 1x1) and at least 8
      channels; ties at 64 (8 channels at 8x8, 16 at 4x4); loses with fewer
      than 8 channels (1.1-1.8x: its transforms then outweigh the GEMMs)
      and at 64 channels of 1x1 images. The line is drawn at 100. It also
      needs enough output pixels in the batch, N*OH*OW >= 1024: its
      weight transforms cost per call and its tile blocks are then few.
      From 256 channels (weights of 2.4-9.4 MB per transform) it also
      needs images of at least 28x28 and 3136 pixels in the batch: with
      im2col's GEMMs split over the threads (blas.gemm_split), im2col
      took 0.4-0.9x Winograd's forward+backward time at 256-512 channels
      on 7x7 and 14x14 images up to batch 32, and Winograd won again at
      512 channels on 28x28 (measured at 2 threads; commit message).
      Dilated, F(2x2, 3x3) (16 multiplies where im2col does 36) wins by
      1.1-2.2x from 400 on that scale, when each dilation phase of the
      output (which the kernel tiles in place) is at least 8 pixels across:
      at dilation 2-3, 8-128 channels, 16x16-56x56 it ran 1.05-1.8x faster
      than im2col forward and fwd+bwd (1 and 2 threads); with phases of
      4-7 pixels (dilation 3 on 14x14-20x20 outputs, 32-128 channels) it
      tied or lost by up to 1.5x: short tile rows.
    - everything else: im2col + GEMM, which runs near the BLAS's speed
      once Cg*R*S and K/groups are a few dozen.

    With CONVCORE_AUTOTUNE=1 a measured winner (convcore.autotune, cached
    on disk per shape) overrides these rules.
    """
    measured = autotune.measured_choice(spec)
    if measured is not None:
        return _REGISTRY[measured]
    if spec.Cg == 1:
        return _REGISTRY["direct"]
    channels = min(spec.Cg, spec.Kg)
    if channels >= 8 and _REGISTRY["winograd"].supports(spec)[0]:
        score = channels * math.sqrt(spec.OH * spec.OW)
        pixels = spec.N * spec.OH * spec.OW
        if spec.dilation == (1, 1):
            if channels >= 256:
                big = spec.OH * spec.OW >= 784 and pixels >= 3136
            else:
                big = pixels >= 1024
            if score >= 100 and big:
                return _REGISTRY["winograd"]
        elif score >= 400 and min(spec.OH // spec.dilation[0], spec.OW // spec.dilation[1]) >= 8:
            return _REGISTRY["winograd"]
    return _REGISTRY["im2col"]


def get_algorithm(name, spec, fn="conv2d"):
    """The algorithm object for `name`, checked against `spec`."""
    if not isinstance(name, str):
        raise TypeError(f"{fn}: algorithm must be a string, one of "
                        f"{conv_algorithms()}, got {name!r}")
    if name == "auto":
        return select_algorithm(spec)
    algo = _REGISTRY.get(name)
    if algo is None:
        raise ValueError(f"{fn}: unknown algorithm {name!r}; choose from "
                         f"{conv_algorithms()}")
    ok, why = algo.supports(spec)
    if not ok:
        raise ValueError(f"{fn}: algorithm {name!r} does not support this "
                         f"configuration: {why}")
    return algo
