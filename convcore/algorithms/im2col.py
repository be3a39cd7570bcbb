"""im2col + GEMM convolution (_kernels.conv_gemm): per-thread column
scratch bounded to one image, single-threaded BLAS inside the parallel
region, or one GEMM split over the threads (blas.gemm_split)."""
import functools

import numpy as np

from convcore._kernels import conv_gemm
from convcore._runtime import threads as _threads
from convcore._runtime.threads import conv_threads
from convcore.algorithms.base import ConvAlgorithm


class Im2colConv(ConvAlgorithm):
    """im2col (per image and group, bounded scratch) + BLAS GEMM. How a
    call runs (threads by image or inside each GEMM, GEMMs in small-matrix
    pieces, images gathered into one GEMM) and its scratch are conv_gemm's
    plan; this class only tells it the threads and the BLAS."""

    name = "im2col"
    # BLASes with OpenBLAS's unpacked small-matrix GEMM kernel (its AVX-512
    # ones), which conv_gemm then feeds in pieces (conv_gemm._piece_columns).
    SMALL_GEMM_ARCHS = ("SkylakeX", "Cooperlake", "SapphireRapids")

    def scratch_bytes(self, spec, backward):
        return conv_gemm.scratch_bytes(spec.params, conv_threads(spec, backward), backward,
                                       spec.dtype.itemsize, _blas_has_small_gemm())

    def forward(self, x, w, bias, y, spec, weight_version=None):
        with _threads.blas_single():
            conv_gemm.forward(x, w, bias, y, spec.params, conv_threads(spec),
                              _blas_has_small_gemm())

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        with _threads.blas_single():
            conv_gemm.backward(grad_y, x, w, grad_x, grad_w, need_x, need_w, spec.params,
                               conv_threads(spec, True))


@functools.cache
def _blas_has_small_gemm():
    """Whether every loaded BLAS (scipy's, which the kernels call, among
    them) is an OpenBLAS running AVX-512 kernels with the small-matrix path.
    Anything else keeps whole GEMMs: cutting them up only costs there."""
    libs = _threads.blas_info()
    return bool(libs) and all(
        lib.get("internal_api") == "openblas"
        and lib.get("architecture") in Im2colConv.SMALL_GEMM_ARCHS for lib in libs)
