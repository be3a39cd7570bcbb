"""Winograd convolution for 3x3 kernels at stride 1: F(4x4, 3x3) undilated
(_kernels.conv_winograd4), F(2x2, 3x3) dilated (_kernels.conv_winograd),
and the cache of transformed weights (DerivedWeights) that lets inference
skip the weight transform while the weights do not change."""
import weakref

import numpy as np

from convcore._kernels import conv_winograd, conv_winograd4
from convcore._runtime import threads as _threads
from convcore._runtime.threads import kernel_threads
from convcore.algorithms.base import _REGISTRY, ConvAlgorithm


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
