"""Registry of convolution algorithms and the choice made by "auto".

Every algorithm accepts the same arguments and gives the same result to
float rounding; a specialised one says what it supports through
`supports(spec)`. `select_algorithm(spec)` is the "auto" rule, exposed so
tests and the benchmark can see what it picks.

    conv2d(..., algorithm) --> get_algorithm(name, spec) --> Algorithm
                                  | "auto": select_algorithm(spec)
                                  v
              DirectConv  --> _kernels.conv_direct (prange, no BLAS)
                          --> _kernels.conv_depthwise (one input channel per group)
              Im2colConv  --> _kernels.conv_gemm   (prange + 1-thread BLAS,
                                                    or GEMMs split over the
                                                    threads, blas.gemm_split)
              WinogradConv --> _kernels.conv_winograd4 (F(4x4), undilated)
                           --> _kernels.conv_winograd  (F(2x2), dilated)
"""
import functools
import math
import weakref

import numpy as np

from convcore import autotune
from convcore._runtime import threads as _threads
from convcore._kernels import (conv_depthwise, conv_direct, conv_gemm, conv_winograd,
                               conv_winograd4, openmp_info)
from convcore._runtime.threads import kernel_threads


class ConvAlgorithm:
    """One way of computing a convolution; subclasses fill the kernels."""

    name = None

    def supports(self, spec):
        """(True, "") or (False, reason) for a checked ConvSpec."""
        return True, ""

    def forward(self, x, w, bias, y, spec, weight_version=None):
        """y = conv(x, w) + bias. weight_version: a token that changes
        whenever w's values may have (Parameter.version), or None; with
        it, arrays derived from w may be reused (see DerivedWeights)."""
        raise NotImplementedError

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        raise NotImplementedError

    def scratch_bytes(self, spec, backward):
        """Bytes of scratch one forward (or full backward) call allocates."""
        return 0


class DirectConv(ConvAlgorithm):
    """Direct loops over the taps; no BLAS. Strong where the GEMM would be
    thin: depthwise, few channels, tiny images. Depthwise layers (one input
    channel per group) run their own kernels (_kernels.conv_depthwise: a
    padded copy of the plane, all nine taps of a 3x3 per output in
    registers, other kernels up to three taps per pass); everything else
    the generic per-tap loops (_kernels.conv_direct)."""

    name = "direct"

    @staticmethod
    def _depthwise(spec):
        """Whether spec runs the depthwise kernels."""
        return conv_depthwise.supports(spec.Cg, spec.R, spec.S)

    def forward(self, x, w, bias, y, spec, weight_version=None):
        kernels = conv_depthwise if self._depthwise(spec) else conv_direct
        kernels.forward(x, w, bias, y, spec.geom, kernel_threads(spec.flops()))

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        nt = kernel_threads(spec.flops())
        kernels = conv_depthwise if self._depthwise(spec) else conv_direct
        if need_x:
            kernels.backward_data(grad_y, w, grad_x, spec.geom, nt)
        if need_w:
            kernels.backward_weight(grad_y, x, grad_w, spec.geom, nt)

    def scratch_bytes(self, spec, backward):
        nt = kernel_threads(spec.flops())
        if self._depthwise(spec):
            # A padded plane per thread; the weight gradient adds R*S
            # partial sums per (image, channel) plane.
            planes = nt * conv_depthwise.thread_elements(
                (spec.N, spec.C, spec.H, spec.W), (spec.K, 1, spec.R, spec.S),
                spec.out_shape, spec.geom, backward)
            partials = spec.N * spec.K * spec.R * spec.S if backward else 0
            return (planes + partials) * spec.dtype.itemsize
        # The generic weight gradient keeps R*S*OW partial sums per thread.
        if not backward:
            return 0
        return nt * spec.R * spec.S * spec.OW * spec.dtype.itemsize


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


def _winograd_weights_ok(w):
    """False for weights Winograd should leave to im2col (whose result is
    PyTorch's):
    - an Inf or NaN: its transforms mix a tile's inputs before the
      products, so one Inf becomes Inf - Inf = NaN in outputs whose windows
      never saw it (the kernels check the images themselves);
    - all of them within 2^20 of the smallest normal float: the weight
      transform divides by up to 24, which pushes such weights into the
      denormal range, where they keep too few bits (measured: 2e-4
      relative error at 1e-39 in float32) and arithmetic on them is slow
      on many CPUs (F(2x2) 1.8x slower than im2col there).
    One pass over the weights, which are small."""
    with np.errstate(invalid="ignore"):
        largest = np.max(np.abs(w), initial=0.0)
    return bool(np.isfinite(largest)) and (largest == 0 or largest >= np.finfo(w.dtype).tiny * 2.0 ** 20)


class WinogradConv(ConvAlgorithm):
    """Winograd convolution for 3x3 kernels at stride 1, as one GEMM over
    the channels per point of the transformed tile. Forward; backward-data
    (the same transform on grad_y with the flipped kernel); weight gradient
    (the adjoint of the forward's GEMMs). Any padding and dilation, in
    place (no path copies the input). Two kernel modules with one
    interface:

    - conv_winograd4, F(4x4, 3x3), undilated layers: 36 multiplies per 4x4
      output tile instead of 144. Measured against F(2x2) at 2 threads over
      C = 16..128 and 8..56-pixel images: 0.34-0.98x its time forward,
      0.55-0.97x for the weight gradient. Its float32 error is ~1e-5 of the
      output's scale (im2col's ~5e-7): the transforms scale by up to 8.
    - conv_winograd, F(2x2, 3x3), dilated layers: 16 multiplies per 2x2
      tile instead of 36; it tiles each dilation phase of the output in
      place (conv_winograd's docstring).
    """

    name = "winograd"
    # Tiles per work block: about TILE_BYTES of V and M scratch, so a
    # block's GEMM operands stay near one core's L2, but MIN_TILES to
    # MAX_TILES (thinner GEMMs lose to their call overhead, longer ones
    # gain nothing). F(2x2) measured best at 64..512, F(4x4) at 32..256.
    TILE_BYTES = 1 << 20
    TILE_RANGE = {conv_winograd: (64, 512), conv_winograd4: (32, 256)}

    def supports(self, spec):
        if (spec.R, spec.S) != (3, 3):
            return False, f"needs a 3x3 kernel, got {spec.R}x{spec.S}"
        if spec.stride != (1, 1):
            return False, f"needs stride 1, got stride={spec.stride}"
        return True, ""

    @staticmethod
    def _kernel(spec):
        """The kernel module for this layer: F(4x4) unless dilated."""
        return conv_winograd4 if spec.dilation == (1, 1) else conv_winograd

    @staticmethod
    def _transform(w, kernel):
        """(K, Cg, 3, 3) -> U (points, K, Cg), U[p*i+j] = (G w G^T)[i, j]."""
        u = np.empty((kernel.POINTS, w.shape[0], w.shape[1]), dtype=w.dtype)
        kernel.transform_weights(np.ascontiguousarray(w), u)
        return u

    @staticmethod
    def _flipped(w, spec):
        """The kernel of backward-data: rotated by 180 degrees, in/out
        channels swapped within each group; (C, K/groups, 3, 3)."""
        G, Kg, Cg = spec.groups, spec.Kg, spec.Cg
        return np.ascontiguousarray(w.reshape(G, Kg, Cg, 3, 3).transpose(0, 2, 1, 3, 4)
                                    .reshape(spec.C, Kg, 3, 3)[:, :, ::-1, ::-1])

    @staticmethod
    def _data_padding(spec):
        """Backward-data's (top, left) padding: grad_x is the full
        correlation of grad_y with the flipped kernel, which reaches
        2*dilation - pad pixels before grad_y's first (negative when the
        forward padded by more than the dilated kernel's reach)."""
        return tuple(2 * d - p for d, p in zip(spec.dilation, spec.padding))

    @classmethod
    def _conv(cls, x, u, bias, y, pad, spec):
        """False when x held an Inf or NaN (y is then to be recomputed)."""
        kernel = cls._kernel(spec)
        rows, threads = cls._plan(kernel, x.shape[1], y.shape[1], u.shape[2], y.shape,
                                  spec, weight_grad=False)
        with _threads.blas_single():
            return kernel.forward(x, u, bias, y, pad[0], pad[1], *spec.dilation,
                                  spec.groups, rows, threads)

    @classmethod
    def _du(cls, x, grad_y, du, spec):
        """False when x or grad_y held an Inf or NaN."""
        kernel = cls._kernel(spec)
        rows, threads = cls._plan(kernel, spec.C, spec.K, spec.Cg, grad_y.shape,
                                  spec, weight_grad=True)
        with _threads.blas_single():
            return kernel.backward_weight(x, grad_y, du, *spec.padding, *spec.dilation,
                                          spec.groups, rows, threads)

    # The weight gradient's GEMMs read and write the whole dU partial
    # (points x K x C/groups) once per block; when that passes 4 x
    # TILE_BYTES (256 channels and up) its blocks take at least
    # WEIGHT_GRAD_TILES tiles, so that the GEMMs' inner dimension pays for
    # the traffic. Measured, F(4x4) weight gradient at 2 threads: 512
    # channels at 28x28 batch 2 85 -> 61 ms, at 14x14 batch 8 99 -> 68 ms,
    # 256 at 56x56 batch 2 51 -> 34 ms; at 128 channels it lost ~10%.
    WEIGHT_GRAD_TILES = 256

    @classmethod
    def _plan(cls, kernel, C, K, Cg, out_shape, spec, weight_grad):
        """(tile rows per block, kernel threads) of one kernel call from C
        to K channels (C/groups = Cg per group of the weights) with output
        shape out_shape. Forward blocks are made thinner where there would
        be fewer than threads, so that every thread has one (the BLAS runs
        on one thread under convcore's; "auto" keeps Winograd for layers
        with enough tiles, see select_algorithm)."""
        N, _, OH, OW = out_shape
        rows = cls._rows_per_block(kernel, C, K, OH, OW, spec.dilation)
        TH, TW = kernel.tile_grid(OH, OW, *spec.dilation)
        if weight_grad and kernel.POINTS * K * Cg * 4 > 4 * cls.TILE_BYTES:
            rows = max(rows, -(-cls.WEIGHT_GRAD_TILES // TW))
        nt = kernel_threads(spec.flops())
        if not weight_grad:  # forward outputs do not depend on the blocks;
            # the weight gradient's sums do, so its blocks never follow nt
            rows = max(1, min(rows, (N * TH) // nt))
        return rows, max(1, min(nt, -(-(N * TH) // rows)))

    @classmethod
    def _rows_per_block(cls, kernel, C, K, OH, OW, dilation):
        lo, hi = cls.TILE_RANGE[kernel]
        tiles = min(max(cls.TILE_BYTES // (kernel.POINTS * (C + K) * 4), lo), hi)
        _, TW = kernel.tile_grid(OH, OW, *dilation)
        return max(1, tiles // TW)

    @classmethod
    def _kernel_scratch(cls, kernel, C, K, Cg, out_shape, spec, weight_grad):
        """Elements the kernel allocates at most for a call from C to K
        channels with output shape out_shape (exact Python ints)."""
        rows, threads = cls._plan(kernel, C, K, Cg, out_shape, spec, weight_grad)
        return threads * kernel.scratch_elements(C, K, out_shape[3], spec.dilation[1], rows)

    def scratch_bytes(self, spec, backward):
        kernel = self._kernel(spec)
        out = (spec.N, spec.K, spec.OH, spec.OW)
        forward = self._kernel_scratch(kernel, spec.C, spec.K, spec.Cg, out, spec, False)
        if not backward:
            return forward * spec.dtype.itemsize
        # backward-data runs the forward on grad_y (channels swapped, the
        # input's size out); the weight gradient needs its buffers plus its
        # fixed partial sums: the larger of the two.
        data = self._kernel_scratch(kernel, spec.K, spec.C, spec.Kg,
                                    (spec.N, spec.C, spec.H, spec.W), spec, False)
        weight = (self._kernel_scratch(kernel, spec.C, spec.K, spec.Cg, out, spec, True)
                  + kernel.NUM_WEIGHT_GRAD_CHUNKS * kernel.POINTS * spec.K * spec.Cg)
        return max(data, weight) * spec.dtype.itemsize

    # Non-finite values go through im2col, whose result is PyTorch's: the
    # weights are checked before (_winograd_weights_ok), the images by the
    # kernels as they transform them (no extra pass over them), which then
    # ask for a rerun.

    def _derived(self, w, spec, weight_version, what):
        """(weights_ok, U) for the forward ("forward") or backward-data
        ("data", the flipped kernel), reused while w is unchanged."""
        kernel = self._kernel(spec)

        def make():
            if not _winograd_weights_ok(w):
                return False, None
            return True, self._transform(w if what == "forward" else self._flipped(w, spec),
                                         kernel)

        return DERIVED.get(w, weight_version, (kernel.__name__, what, spec.groups), make)

    def forward(self, x, w, bias, y, spec, weight_version=None):
        im2col = _REGISTRY["im2col"]
        ok, u = self._derived(w, spec, weight_version, "forward")
        if not ok or not self._conv(x, u, bias, y, spec.padding, spec):
            im2col.forward(x, w, bias, y, spec)

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        im2col = _REGISTRY["im2col"]
        kernel = self._kernel(spec)
        if need_x:
            # grad_x = full correlation of grad_y with the flipped kernel.
            ok, u = self._derived(w, spec, weight_version, "data")
            if not ok or not self._conv(grad_y, u, np.empty(0, x.dtype), grad_x,
                                        self._data_padding(spec), spec):
                im2col.backward(grad_y, x, w, grad_x, grad_w, True, False, spec)
        if need_w:
            # The adjoint of the forward: dU = sum over tiles of dM V^T (a
            # GEMM per point), then grad_w = G^T dU G.
            du = np.empty((kernel.POINTS, spec.K, spec.Cg), dtype=x.dtype)
            if self._du(x, grad_y, du, spec):
                kernel.untransform_weight_grad(du, grad_w)
            else:
                im2col.backward(grad_y, x, w, grad_x, grad_w, False, True, spec)


class DerivedWeights:
    """Arrays an algorithm derives from a weight array (Winograd's
    transformed weights and their check), kept while the weights do not
    change, so that inference does not redo them per call.

    An entry is keyed on the weight array's identity, held through a weak
    reference (a freed array whose id is reused never matches), and on the
    caller's version token (Parameter.version: optimisers, load_state_dict
    and assignment to .data change it). Without a token nothing is kept:
    a bare array may be written in place between calls. At most
    MAX_BYTES are held, the least recently used dropped first.
    """

    MAX_BYTES = 256 << 20

    def __init__(self):
        self._entries = {}  # id(w) -> [weakref(w), version, {kind: value}, bytes]
        self._bytes = 0

    def get(self, w, version, kind, make):
        if version is None:
            return make()
        key = id(w)
        entry = self._entries.get(key)
        if entry is not None and (entry[0]() is not w or entry[1] != version):
            self._drop(key)
            entry = None
        if entry is not None and kind in entry[2]:
            self._entries[key] = self._entries.pop(key)  # most recent last
            return entry[2][kind]
        value = make()
        size = sum(v.nbytes for v in value if isinstance(v, np.ndarray))
        if size > self.MAX_BYTES:
            return value
        if entry is None:
            try:  # dropped as soon as the array is freed
                ref = weakref.ref(w, lambda r, key=key: self._drop(key, r))
            except TypeError:
                return value
            entry = self._entries[key] = [ref, version, {}, 0]
        entry[2][kind] = value
        entry[3] += size
        self._bytes += size
        while self._bytes > self.MAX_BYTES and len(self._entries) > 1:
            self._drop(next(iter(self._entries)))
        return value

    def _drop(self, key, ref=None):
        entry = self._entries.get(key)
        if entry is not None and (ref is None or entry[0] is ref):
            del self._entries[key]
            self._bytes -= entry[3]

    def clear(self):
        self._entries.clear()
        self._bytes = 0

    def __len__(self):
        return len(self._entries)


DERIVED = DerivedWeights()

_REGISTRY = {cls.name: cls() for cls in (DirectConv, Im2colConv, WinogradConv)}


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
