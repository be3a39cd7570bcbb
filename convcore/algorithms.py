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
              WinogradConv --> _kernels.winograd   (F(4x4) undilated,
                                                    F(2x2) dilated)
"""
import functools
import math
import weakref

import numpy as np

from convcore import _threads, autotune
from convcore._kernels import (conv_depthwise, conv_direct, conv_gemm, openmp_info,
                               winograd)
from convcore._threads import kernel_threads


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
        kernels.forward(x, w, bias, y, spec.params, kernel_threads(spec.flops()))

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        nt = kernel_threads(spec.flops())
        kernels = conv_depthwise if self._depthwise(spec) else conv_direct
        if need_x:
            kernels.backward_data(grad_y, w, grad_x, spec.params, nt)
        if need_w:
            kernels.backward_weight(grad_y, x, grad_w, spec.params, nt)

    def scratch_bytes(self, spec, backward):
        kernels = conv_depthwise if self._depthwise(spec) else conv_direct
        return kernels.scratch_bytes(spec.params, kernel_threads(spec.flops()), backward,
                                     spec.dtype.itemsize)


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
        return conv_gemm.scratch_bytes(spec.params, kernel_threads(spec.flops()), backward,
                                       spec.dtype.itemsize, _blas_has_small_gemm())

    def forward(self, x, w, bias, y, spec, weight_version=None):
        with _threads.blas_single():
            conv_gemm.forward(x, w, bias, y, spec.params, kernel_threads(spec.flops()),
                              _blas_has_small_gemm())

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        with _threads.blas_single():
            conv_gemm.backward(grad_y, x, w, grad_x, grad_w, need_x, need_w, spec.params,
                               kernel_threads(spec.flops()))


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
    place (no path copies the input). One kernel module,
    _kernels.winograd, with two tile sizes:

    - winograd_f4, F(4x4, 3x3), undilated layers: 36 multiplies per 4x4
      output tile instead of 144. Faster than F(2x2) forward and for the
      weight gradient; its float32 error is ~1e-5 of the output's scale
      (im2col's ~5e-7): the transforms scale by up to 8.
    - winograd_f2, F(2x2, 3x3), dilated layers: 16 multiplies per 2x2
      tile instead of 36; each dilation phase of the output is tiled in
      place (the module's docstring).
    """

    name = "winograd"

    def supports(self, spec):
        if (spec.R, spec.S) != (3, 3):
            return False, f"needs a 3x3 kernel, got {spec.R}x{spec.S}"
        if spec.stride != (1, 1):
            return False, f"needs stride 1, got stride={spec.stride}"
        return True, ""

    @staticmethod
    def _tile(spec):
        """The tile size for this layer: F(4x4) unless dilated."""
        return "winograd_f4" if spec.dilation == (1, 1) else "winograd_f2"

    @staticmethod
    def _transform(w, tile):
        """(K, Cg, 3, 3) -> U (points, K, Cg), U[alpha*i+j] = (G w G^T)[i, j]."""
        u = np.empty((winograd.points(tile), w.shape[0], w.shape[1]), dtype=w.dtype)
        winograd.transform_weights(np.ascontiguousarray(w), u, tile)
        return u

    @staticmethod
    def _flipped(w, spec):
        """The kernel of backward-data: rotated by 180 degrees, in/out
        channels swapped within each group; (C, K/groups, 3, 3)."""
        G, Kg, Cg = spec.groups, spec.Kg, spec.Cg
        return np.ascontiguousarray(w.reshape(G, Kg, Cg, 3, 3).transpose(0, 2, 1, 3, 4)
                                    .reshape(spec.C, Kg, 3, 3)[:, :, ::-1, ::-1])

    def scratch_bytes(self, spec, backward):
        def elements(pass_name):
            return winograd.plan(self._tile(spec), pass_name, (spec.N, spec.C, spec.H, spec.W),
                                 (spec.K, spec.Cg, 3, 3), spec.out_shape, spec.geom,
                                 kernel_threads(spec.flops()))["scratch_elements"]
        if not backward:
            return elements("forward") * spec.dtype.itemsize
        # Backward-data and the weight gradient run one after the other.
        return max(elements("backward_data"),
                   elements("backward_weight")) * spec.dtype.itemsize

    # Non-finite values go through im2col, whose result is PyTorch's: the
    # weights are checked before (_winograd_weights_ok), the images by the
    # kernels as they transform them (no extra pass over them), which then
    # ask for a rerun.

    def _derived(self, w, spec, weight_version, what):
        """(weights_ok, U) for the forward ("forward") or backward-data
        ("data", the flipped kernel), reused while w is unchanged."""
        tile = self._tile(spec)

        def make():
            if not _winograd_weights_ok(w):
                return False, None
            return True, self._transform(w if what == "forward" else self._flipped(w, spec),
                                         tile)

        return DERIVED.get(w, weight_version, (tile, what, spec.groups), make)

    def forward(self, x, w, bias, y, spec, weight_version=None):
        ok, u = self._derived(w, spec, weight_version, "forward")
        if ok:
            with _threads.blas_single():
                ok = winograd.forward(x, u, bias, y, spec.geom, self._tile(spec),
                                      kernel_threads(spec.flops()))
        if not ok:  # weights or images Winograd leaves to im2col
            _REGISTRY["im2col"].forward(x, w, bias, y, spec)

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        im2col = _REGISTRY["im2col"]
        tile, nt = self._tile(spec), kernel_threads(spec.flops())
        if need_x:
            # grad_x = full correlation of grad_y with the flipped kernel.
            ok, u = self._derived(w, spec, weight_version, "data")
            if ok:
                with _threads.blas_single():
                    ok = winograd.backward_data(grad_y, u, grad_x, spec.geom, tile, nt)
            if not ok:
                im2col.backward(grad_y, x, w, grad_x, grad_w, True, False, spec)
        if need_w:
            # The adjoint of the forward: dU = sum over tiles of dM V^T (a
            # GEMM per point), then grad_w = G^T dU G.
            du = np.empty((winograd.points(tile), spec.K, spec.Cg), dtype=x.dtype)
            with _threads.blas_single():
                ok = winograd.backward_weight(x, grad_y, du, spec.geom, tile, nt)
            if ok:
                winograd.untransform_weight_grad(du, grad_w, tile)
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
