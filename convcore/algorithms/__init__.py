"""Floor 2: the convolution algorithms and the choice made by "auto".

Every algorithm accepts the same arguments and gives the same result to
float rounding; a specialised one says what it supports through
`supports(spec)`. `select_algorithm(spec)` is the "auto" rule, exposed so
tests and the benchmark can see what it picks.

    conv2d(..., algorithm) --> get_algorithm(name, spec) --> Algorithm
                                  | "auto": select_algorithm(spec)
                                  v
              DirectConv  --> _kernels.conv_direct (prange, no BLAS; float32
                                                    stride 1: direct_block.h)
                          --> _kernels.conv_depthwise (one input channel per group)
              Im2colConv  --> _kernels.conv_gemm   (prange + 1-thread BLAS,
                                                    or GEMMs split over the
                                                    threads, blas.gemm_split)
              WinogradConv --> _kernels.winograd   (F(4x4) undilated,
                                                    F(2x2) dilated)

    base.py      ConvAlgorithm (the interface) and _REGISTRY
    direct.py    DirectConv
    im2col.py    Im2colConv
    winograd.py  WinogradConv, DerivedWeights (transformed-weight cache)
    registry.py  conv_algorithms, supported_algorithms, select_algorithm,
                 get_algorithm, PerPassConv ("auto" with an algorithm per pass)
    autotune.py  measured choice for "auto", cached on disk (opt-in)
"""
from convcore.algorithms.base import _REGISTRY, ConvAlgorithm
from convcore.algorithms.direct import DirectConv
from convcore.algorithms.im2col import Im2colConv, _blas_has_small_gemm
from convcore.algorithms.registry import (
    PerPassConv, conv_algorithms, get_algorithm, select_algorithm, supported_algorithms)
from convcore.algorithms.winograd import (
    DERIVED, DerivedWeights, WinogradConv, _winograd_weights_ok)

__all__ = ["conv_algorithms", "supported_algorithms", "select_algorithm", "get_algorithm",
           "ConvAlgorithm", "DirectConv", "Im2colConv", "WinogradConv", "PerPassConv",
           "DerivedWeights", "DERIVED"]
