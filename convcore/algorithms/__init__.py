"""Floor 2: the convolution algorithms and the choice made by "auto"
(the code is in registry.py; split by algorithm in the next change)."""
from convcore.algorithms.registry import (  # noqa: F401
    _REGISTRY, DERIVED, ConvAlgorithm, DerivedWeights, DirectConv, Im2colConv, WinogradConv,
    _blas_has_small_gemm, _winograd_weights_ok, conv_algorithms, get_algorithm,
    select_algorithm, supported_algorithms)
