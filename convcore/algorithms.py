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
                                                    or n-thread BLAS alone)
"""
import math

import numpy as np

from convcore import _threads, autotune
from convcore._kernels import (
    conv_depthwise, conv_direct, conv_gemm, conv_winograd, openmp_info)
from convcore._threads import kernel_threads


class ConvAlgorithm:
    """One way of computing a convolution; subclasses fill the kernels."""

    name = None

    def supports(self, spec):
        """(True, "") or (False, reason) for a checked ConvSpec."""
        return True, ""

    def forward(self, x, w, bias, y, spec):
        raise NotImplementedError

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec):
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

    def forward(self, x, w, bias, y, spec):
        kernels = conv_depthwise if self._depthwise(spec) else conv_direct
        kernels.forward(x, w, bias, y, spec.geom, kernel_threads(spec.flops()))

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec):
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

    @staticmethod
    def _plan(work_items, spec):
        """(threads, batch_parallel, blas_threads). Enough independent items:
        our own prange owns the threads and each GEMM runs on one. Too few
        (batch 1) or no OpenMP: one item at a time, and the BLAS owns the
        threads. Tiny layers run on one thread either way."""
        nt = kernel_threads(spec.flops())
        if openmp_info.openmp_enabled() and work_items >= nt:
            return nt, True, 1
        return nt, False, nt

    def _items(self, spec, backward):
        """Independent work items of the call: (image, group) pairs forward,
        fixed image chunks backward (conv_gemm's weight-gradient partials)."""
        if backward:
            return min(spec.N, conv_gemm.NUM_WEIGHT_GRAD_CHUNKS)
        return spec.N * spec.groups

    def scratch_bytes(self, spec, backward):
        # conv_gemm's buffers: one (Cg*R*S, OH*OW) column per thread (none
        # for a pointwise layer), and backward's weight-gradient partials.
        nt, batch_parallel, _ = self._plan(self._items(spec, backward), spec)
        per_row = spec.Cg * spec.R * spec.S * spec.OW
        rows = min(max(conv_gemm.COLUMN_BUDGET_ELEMENTS // per_row, 1), spec.OH)
        column = 0 if spec.is_pointwise else per_row * rows  # a stripe of output rows
        elements = column * (nt if batch_parallel else 1)
        chunks = min(spec.N, conv_gemm.NUM_WEIGHT_GRAD_CHUNKS)
        if backward and chunks > 1:
            elements += chunks * spec.K * spec.Cg * spec.R * spec.S
        return elements * spec.dtype.itemsize

    def forward(self, x, w, bias, y, spec):
        nt, batch_parallel, blas_nt = self._plan(self._items(spec, False), spec)
        with _threads.blas_threads(blas_nt):
            conv_gemm.forward(x, w, bias, y, spec.geom, nt, batch_parallel)

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec):
        nt, batch_parallel, blas_nt = self._plan(self._items(spec, True), spec)
        with _threads.blas_threads(blas_nt):
            conv_gemm.backward(grad_y, x, w, grad_x, grad_w, need_x, need_w,
                               spec.geom, nt, batch_parallel)


def _all_finite(*arrays):
    """False when an array holds an Inf or NaN (or sums past the float
    range: a false alarm that only costs speed). Winograd's transforms mix
    a tile's inputs before the products, so one Inf becomes Inf - Inf = NaN
    in outputs whose windows never saw it; PyTorch's result is what the
    im2col path gives. A sum costs one read, no temporary."""
    with np.errstate(over="ignore", invalid="ignore"):
        return all(np.isfinite(np.add.reduce(a, axis=None)) for a in arrays)


class WinogradConv(ConvAlgorithm):
    """Winograd F(2x2, 3x3) for 3x3 kernels at stride 1: 16 multiplies per
    2x2 output tile instead of 36, as 16 GEMMs over the channels. Forward;
    backward-data (the same transform on grad_y with the flipped kernel);
    weight gradient (the adjoint of the forward's GEMMs).

    Dilation d > 1 (and padding the kernel cannot do itself: asymmetric, or
    more than 2) goes through an explicitly padded copy split into its d x d
    polyphase components: y[..., a::d, b::d] is the undilated 3x3 valid
    convolution of xpad[..., a::d, b::d]. The components are stacked along
    the batch, so one kernel call convolves them all."""

    name = "winograd"
    # Interpolation matrix of the weight transform U = G g G^T.
    _G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

    def supports(self, spec):
        if (spec.R, spec.S) != (3, 3):
            return False, f"needs a 3x3 kernel, got {spec.R}x{spec.S}"
        if spec.stride != (1, 1):
            return False, f"needs stride 1, got stride={spec.stride}"
        return True, ""

    @staticmethod
    def _kernel_pads(spec):
        """True when the kernels pad by themselves: dilation 1 and symmetric
        padding <= 2 (backward-data runs with padding 2 - pad)."""
        (ph, pw), (th, tw) = spec.padding, spec.padding_total
        return spec.dilation == (1, 1) and max(ph, pw) <= 2 and (th, tw) == (2 * ph, 2 * pw)

    @staticmethod
    def _to_phases(a, d):
        """(N, C, Hq*dh, Wq*dw) -> (N*dh*dw, C, Hq, Wq): the dh x dw
        polyphase components stacked along the batch, one copy."""
        N, C, H, W = a.shape
        (dh, dw) = d
        return np.ascontiguousarray(a.reshape(N, C, H // dh, dh, W // dw, dw)
                                    .transpose(0, 3, 5, 1, 2, 4).reshape(N * dh * dw, C, H // dh, W // dw))

    @staticmethod
    def _from_phases(a, d):
        """The inverse of _to_phases (a view)."""
        M, C, h, w = a.shape
        (dh, dw) = d
        return (a.reshape(M // (dh * dw), dh, dw, C, h, w).transpose(0, 3, 4, 1, 5, 2)
                .reshape(M // (dh * dw), C, h * dh, w * dw))

    @staticmethod
    def _phase_grid(spec):
        """(Hq, Wq): rows and columns of each polyphase component of the
        padded input, which is extended with zeros to a multiple of the
        dilation so that every component has the same size."""
        (dh, dw), (th, tw) = spec.dilation, spec.padding_total
        return -(-(spec.H + th) // dh), -(-(spec.W + tw) // dw)

    def _phased_input(self, x, spec):
        Hq, Wq = self._phase_grid(spec)
        (dh, dw), (top, left) = spec.dilation, spec.padding
        xq = np.zeros((spec.N, spec.C, Hq * dh, Wq * dw), dtype=x.dtype)
        xq[:, :, top:top + spec.H, left:left + spec.W] = x
        return self._to_phases(xq, spec.dilation)

    def _phased_grad_y(self, grad_y, spec):
        Hq, Wq = self._phase_grid(spec)
        (dh, dw) = spec.dilation
        gq = np.zeros((spec.N, spec.K, (Hq - 2) * dh, (Wq - 2) * dw), dtype=grad_y.dtype)
        gq[:, :, :spec.OH, :spec.OW] = grad_y
        return self._to_phases(gq, spec.dilation)

    def _transform(self, w):
        """(K, Cg, 3, 3) -> U of shape (16, K, Cg), U[4i+j] = (G w G^T)[i, j].
        On one BLAS thread: a multithreaded numpy GEMM leaves its pool
        spinning for milliseconds after it returns, on the cores the kernel
        that follows needs (measured: 3x3 128->128 16x16 forward 22 ms
        after it, 11 ms without)."""
        G = self._G.astype(w.dtype)
        with _threads.blas_threads(1):
            u = np.einsum("ir,kcrs,js->ijkc", G, w, G, optimize=True)
        return np.ascontiguousarray(u.reshape(16, w.shape[0], w.shape[1]))

    @staticmethod
    def _flipped(w, spec):
        """The kernel of backward-data: rotated by 180 degrees, in/out
        channels swapped within each group; (C, K/groups, 3, 3)."""
        G, Kg, Cg = spec.groups, spec.Kg, spec.Cg
        return np.ascontiguousarray(w.reshape(G, Kg, Cg, 3, 3).transpose(0, 2, 1, 3, 4)
                                    .reshape(spec.C, Kg, 3, 3)[:, :, ::-1, ::-1])

    @classmethod
    def _conv(cls, x, u, bias, y, pad, spec):
        rows = cls._rows_per_block(x.shape[1], y.shape[1], y.shape[3])
        with _threads.blas_threads(1):
            conv_winograd.forward(x, u, bias, y, pad[0], pad[1], spec.groups, rows,
                                  kernel_threads(spec.flops()))

    @classmethod
    def _du(cls, x, grad_y, du, pad, spec):
        rows = cls._rows_per_block(x.shape[1], grad_y.shape[1], grad_y.shape[3])
        with _threads.blas_threads(1):
            conv_winograd.backward_weight(x, grad_y, du, pad[0], pad[1], spec.groups, rows,
                                          kernel_threads(spec.flops()))

    # Tile rows per work block: about TILE_BYTES of V and M scratch, so a
    # block's GEMM operands stay near one core's L2, but MIN_TILES to
    # MAX_TILES tiles (thinner GEMMs lose to their call overhead, longer
    # ones gain nothing).
    TILE_BYTES, MIN_TILES, MAX_TILES = 1 << 20, 64, 512

    @classmethod
    def _rows_per_block(cls, C, K, OW):
        tiles = min(max(cls.TILE_BYTES // (16 * (C + K) * 4), cls.MIN_TILES), cls.MAX_TILES)
        TW = (OW + 1) // 2
        return max(1, tiles // TW)

    @classmethod
    def _kernel_scratch(cls, C, K, OW, threads):
        """Elements conv_winograd.forward allocates: V, M and row buffers
        per thread (exact Python ints: no product can wrap)."""
        TW = (OW + 1) // 2
        TB = cls._rows_per_block(C, K, OW) * TW
        return threads * (16 * (C + K) * TB + 8 * (2 * TW + 2))

    def _shape_args(self, spec):
        """(C, K, width) the kernel sees: the polyphase path convolves
        ceil((W + padding) / dilation)-wide components."""
        if self._kernel_pads(spec):
            return spec.OW, spec.W
        Hq, Wq = self._phase_grid(spec)
        return Wq - 2, Wq

    def scratch_bytes(self, spec, backward):
        nt = kernel_threads(spec.flops())
        size = spec.dtype.itemsize
        out_w, in_w = self._shape_args(spec)
        # The polyphase path adds padded, rearranged copies of the input
        # (and for backward, of grad_y and grad_x).
        Hq, Wq = self._phase_grid(spec)
        dd = spec.dilation[0] * spec.dilation[1]
        copy = 0 if self._kernel_pads(spec) else 2 * spec.N * dd * Hq * Wq * (
            spec.C + spec.K * backward)
        if not backward:
            return (copy + self._kernel_scratch(spec.C, spec.K, out_w, nt)) * size
        # backward-data runs the forward on grad_y (channels swapped, input
        # width); the weight gradient needs the forward's buffers plus its
        # fixed partial sums: the larger of the two.
        data = self._kernel_scratch(spec.K, spec.C, in_w, nt)
        weight = (self._kernel_scratch(spec.C, spec.K, out_w, nt)
                  + conv_winograd.NUM_WEIGHT_GRAD_CHUNKS * 16 * spec.K * spec.Cg)
        return (copy + max(data, weight)) * size

    def forward(self, x, w, bias, y, spec):
        if not _all_finite(x, w):
            _REGISTRY["im2col"].forward(x, w, bias, y, spec)
            return
        u = self._transform(w)
        if self._kernel_pads(spec):
            self._conv(x, u, bias, y, spec.padding, spec)
            return
        Hq, Wq = self._phase_grid(spec)
        xs = self._phased_input(x, spec)
        ys = np.empty((xs.shape[0], spec.K, Hq - 2, Wq - 2), dtype=x.dtype)
        self._conv(xs, u, bias, ys, (0, 0), spec)
        y[...] = self._from_phases(ys, spec.dilation)[:, :, :spec.OH, :spec.OW]

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec):
        # Non-finite values go through im2col, whose result is PyTorch's.
        im2col = _REGISTRY["im2col"]
        if need_x and not _all_finite(grad_y, w):
            im2col.backward(grad_y, x, w, grad_x, grad_w, True, False, spec)
            need_x = False
        if need_w and not _all_finite(grad_y, x):
            im2col.backward(grad_y, x, w, grad_x, grad_w, False, True, spec)
            need_w = False
        direct = self._kernel_pads(spec)
        if not direct and (need_x or need_w):
            gys = self._phased_grad_y(grad_y, spec)
        if need_x:
            # grad_x = full correlation of grad_y with the flipped kernel.
            u_t = self._transform(self._flipped(w, spec))
            no_bias = np.empty(0, x.dtype)
            if direct:
                self._conv(grad_y, u_t, no_bias, grad_x,
                           (2 - spec.padding[0], 2 - spec.padding[1]), spec)
            else:
                Hq, Wq = self._phase_grid(spec)
                gxs = np.empty((gys.shape[0], spec.C, Hq, Wq), dtype=x.dtype)
                self._conv(gys, u_t, no_bias, gxs, (2, 2), spec)
                top, left = spec.padding
                grad_x[...] = self._from_phases(gxs, spec.dilation)[
                    :, :, top:top + spec.H, left:left + spec.W]
        if need_w:
            # The adjoint of the forward: dU = sum over tiles of dM V^T (16
            # GEMMs), then grad_w = G^T dU G.
            du = np.empty((16, spec.K, spec.Cg), dtype=x.dtype)
            if direct:
                self._du(x, grad_y, du, spec.padding, spec)
            else:
                self._du(self._phased_input(x, spec), gys, du, (0, 0), spec)
            G = self._G.astype(x.dtype)
            with _threads.blas_threads(1):  # see _transform
                grad_w[...] = np.einsum("ir,ijkc,js->kcrs", G, du.reshape(4, 4, spec.K, spec.Cg),
                                        G, optimize=True)


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
    - 3x3 stride 1 with enough channels and pixels: Winograd F(2x2, 3x3)
      does 16 multiplies where im2col does 36; it wins by 1.1-2.2x once
      min(C/groups, K/groups) * sqrt(OH*OW) >= 400 (e.g. 64 channels at
      7x7, 32 at 14x14, 16 at 28x28; every measured point on either side
      of that line agreed). Below it its 16 GEMMs (inner dimension
      C/groups) are too small and its transforms dominate. Dilated layers run Winograd on polyphase copies,
      which only ties with im2col on one thread and loses on two (the
      copies are serial), so auto leaves them to im2col.
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
    if (channels >= 8 and channels * math.sqrt(spec.OH * spec.OW) >= 400
            and _REGISTRY["winograd"].supports(spec)[0]
            and WinogradConv._kernel_pads(spec)):
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
