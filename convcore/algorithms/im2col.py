"""im2col + GEMM convolution (_kernels.conv_gemm): per-thread column
scratch bounded to one image, single-threaded BLAS inside the parallel
region, or one GEMM split over the threads (blas.gemm_split)."""
import functools

import numpy as np

from convcore._kernels import conv_gemm
from convcore._runtime import threads as _threads
from convcore._runtime.threads import kernel_threads
from convcore.algorithms.base import ConvAlgorithm


class Im2colConv(ConvAlgorithm):
    """im2col (per image and group, bounded scratch) + BLAS GEMM."""

    name = "im2col"
    # OpenBLAS's AVX-512 kernels (SkylakeX and later) multiply a product of
    # at most 100^3 multiply-adds with an unpacked small-matrix kernel
    # (interface/gemm.c, *_small_matrix_permit): ~110 GFLOP/s a core here
    # where packing a thin weight matrix's operands gets 55-95.
    SMALL_GEMM_MACS = 100 ** 3
    SMALL_GEMM_ARCHS = ("SkylakeX", "Cooperlake", "SapphireRapids")
    # Pieces are whole 16-float vectors of output columns; past ~200 output
    # channels per group (a ResNet 1x1 64->256) the packed GEMM is faster.
    GEMM_COL_STEP = 16
    MAX_SMALL_GEMM_CHANNELS = 192

    @staticmethod
    def _plan(work_items, spec):
        """(threads, batch_parallel). Enough independent items: a prange
        over them, each GEMM on one thread. Too few (batch 1): one item at
        a time, its im2col and GEMMs split over the threads. Tiny layers
        run on one thread either way; the BLAS always does."""
        nt = kernel_threads(spec.flops())
        return nt, work_items >= nt

    @classmethod
    def _gemm_cols(cls, spec, batch_parallel):
        """Output columns per forward GEMM piece (0: whole GEMMs): the most
        whole vectors that keep a piece within the small-matrix kernel, on
        a BLAS that has one, for single-threaded GEMMs (the small kernel
        runs on one thread: a threaded BLAS call keeps the whole GEMM).
        A piece wider than two images makes conv_gemm put several images
        side by side in one GEMM.
        Measured on the issue-7 layers and ResNet/AlexNet 1x1-11x11 shapes
        at Kg 16..256: 1.15-1.6x faster forward where it applies, in
        float32; float64's 8-wide small kernel wins or loses by up to 12%
        (1x1 64->128), so it keeps whole GEMMs."""
        if (not batch_parallel or spec.dtype != np.float32
                or spec.Kg > cls.MAX_SMALL_GEMM_CHANNELS):
            return 0
        if not _blas_has_small_gemm():
            return 0
        crs = spec.Cg * spec.R * spec.S
        return cls.SMALL_GEMM_MACS // (spec.Kg * crs) // cls.GEMM_COL_STEP * cls.GEMM_COL_STEP

    @staticmethod
    def _column(spec, gemm_cols):
        """conv_gemm's per-thread scratch (_column_size_for), in Python ints."""
        P, crs = spec.OH * spec.OW, spec.Cg * spec.R * spec.S
        if spec.is_pointwise:
            return 0  # the input is the column
        small = conv_gemm.SMALL_GEMM_COLUMN_BUDGET_ELEMENTS

        def ld(columns):  # rows padded to 16-element lines for GEMM pieces
            return -(-columns // 16) * 16 if gemm_cols > 0 else columns

        if gemm_cols > 0 and gemm_cols >= 2 * P > 0:  # whole images side by side, and their product
            images = min(gemm_cols // P, small // (crs * P))
            if images > 1:
                return ld(images * P) * (crs + spec.Kg)
        per_row = crs * spec.OW  # else a stripe of output rows
        budget = (conv_gemm.SPLIT_COLUMN_BUDGET_ELEMENTS if gemm_cols == conv_gemm.SPLIT
                  else small if gemm_cols else conv_gemm.COLUMN_BUDGET_ELEMENTS)
        return crs * ld(spec.OW * min(max(budget // per_row, 1), spec.OH))

    def _items(self, spec, backward):
        """Independent work items of the call: (image, group) pairs forward,
        fixed image chunks backward (conv_gemm's weight-gradient partials)."""
        if backward:
            return min(spec.N, conv_gemm.NUM_WEIGHT_GRAD_CHUNKS)
        return spec.N * spec.groups

    def scratch_bytes(self, spec, backward):
        # conv_gemm's buffers: one column stripe per thread (none for a
        # pointwise layer; a smaller stripe when the GEMMs go in pieces),
        # and backward's weight-gradient partials.
        nt, batch_parallel = self._plan(self._items(spec, backward), spec)
        crs = spec.Cg * spec.R * spec.S
        if not backward and self._gathers_forward(spec):
            P = spec.OH * spec.OW
            images = conv_gemm.gathered_images(spec.N, P, crs, spec.Kg)
            return images * P * (crs + spec.Kg) * spec.dtype.itemsize
        if not batch_parallel:  # one item at a time, GEMMs split: big stripes
            gemm_cols = conv_gemm.SPLIT
        else:
            gemm_cols = 0 if backward else self._gemm_cols(spec, batch_parallel)
        elements = self._column(spec, gemm_cols) * (nt if batch_parallel else 1)
        chunks = min(spec.N, conv_gemm.NUM_WEIGHT_GRAD_CHUNKS)
        if backward and (self._gathers_weight_grad(spec) or self._gathers_forward(spec)):
            # per-image columns (and partials), then (freed) a gathered GEMM's
            P = spec.OH * spec.OW
            images = conv_gemm.gathered_images(spec.N, P, crs, spec.Kg)
            if not self._gathers_weight_grad(spec):
                elements += chunks * spec.K * crs
            elements = max(elements, images * P * (crs + spec.Kg))
        elif backward:  # separate partials, even for one chunk
            elements += chunks * spec.K * crs
        return elements * spec.dtype.itemsize

    @staticmethod
    def _gathers_weight_grad(spec):
        """Whether the weight gradient is one GEMM over many images
        (conv_gemm.weight_grad_gathered) rather than per-image GEMMs into
        min(N, 8) partial copies of the weights: when those copies would
        outnumber the output pixels they sum over (many channels, small
        images). Measured at 2 threads, 512 channels at 7x7, batch 8:
        55 -> 10.6 ms."""
        chunks = min(spec.N, conv_gemm.NUM_WEIGHT_GRAD_CHUNKS)
        return chunks * spec.Kg > spec.N * spec.OH * spec.OW

    @staticmethod
    def _gathers_forward(spec):
        """Whether the forward is one GEMM over several images
        (conv_gemm.forward_gathered): small images (OH*OW <= 196) under
        big weights (K/groups >= 128), where a GEMM per image is too thin.
        Measured at 2 threads, batch 8: 128 channels at 7x7 1.65 -> 0.95 ms,
        at 14x14 5.6 -> 3.1-3.7 ms, 256 at 7x7 5.9 -> 2.9 ms, 512 at 4x4
        5.6-8.7 -> 3.8-4.4 ms; 512 at 7x7 and 256 at 14x14 tie; 64 channels
        or 28x28 images lose (1.2-1.9x), so they keep a GEMM per image."""
        return spec.N >= 2 and spec.Kg >= 128 and spec.OH * spec.OW <= 196

    def forward(self, x, w, bias, y, spec, weight_version=None):
        nt, batch_parallel = self._plan(self._items(spec, False), spec)
        with _threads.blas_single():
            if self._gathers_forward(spec):  # one GEMM at a time, split over the threads
                conv_gemm.forward_gathered(x, w, bias, y, spec.geom, nt)
                return
            gemm_cols = self._gemm_cols(spec, batch_parallel)
            conv_gemm.forward(x, w, bias, y, spec.geom, nt, batch_parallel, gemm_cols)

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        nt, batch_parallel = self._plan(self._items(spec, True), spec)
        gather = need_w and self._gathers_weight_grad(spec)
        gather_x = need_x and self._gathers_forward(spec)  # its adjoint's layers
        with _threads.blas_single():
            if (need_x and not gather_x) or (need_w and not gather):
                conv_gemm.backward(grad_y, x, w, grad_x, grad_w, need_x and not gather_x,
                                   need_w and not gather, spec.geom, nt, batch_parallel)
            if gather_x:  # one GEMM at a time, split over the threads
                conv_gemm.backward_data_gathered(grad_y, w, grad_x, spec.geom, nt)
            if gather:
                conv_gemm.weight_grad_gathered(grad_y, x, grad_w, spec.geom, nt)


@functools.cache
def _blas_has_small_gemm():
    """Whether every loaded BLAS (scipy's, which the kernels call, among
    them) is an OpenBLAS running AVX-512 kernels with the small-matrix path.
    Anything else keeps whole GEMMs: cutting them up only costs there."""
    libs = _threads.blas_info()
    return bool(libs) and all(
        lib.get("internal_api") == "openblas"
        and lib.get("architecture") in Im2colConv.SMALL_GEMM_ARCHS for lib in libs)
