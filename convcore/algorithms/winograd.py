"""Winograd convolution for 3x3 kernels at stride 1: F(4x4, 3x3)
(_kernels.winograd's winograd_f4) or F(2x2, 3x3) (winograd_f2), chosen
per pass, and the cache of transformed weights (DerivedWeights) that lets
inference skip the weight transform while the weights do not change."""
import weakref

import numpy as np

from convcore._kernels import winograd
from convcore._runtime import memory
from convcore._runtime import threads as _threads
from convcore._runtime.threads import conv_threads, kernel_threads
from convcore.algorithms import phases
from convcore.algorithms.base import _REGISTRY, ConvAlgorithm


# F(2x2) runs the forward and backward-data of undilated layers whose
# output F(4x4)'s tiles would pad to at least this many times the pixels
# F(2x2)'s tiles pad it to (10x10: 144 against 100; 14x14 and 13x13, 256
# against 196, stay F(4x4)).
F2_PADDED_RATIO = 1.4


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
    place (no path copies the input).

    Strided, undilated layers whose kernel spans three taps of each stride
    phase (ceil(R/stride) == 3: 11x11 at stride 4, 5x5 at stride 2) run
    as the 3x3 stride-1 convolution over their input's stride phases
    (convcore.algorithms.phases), one copy of the input; the kernel's taps
    past R, S are zeros (AlexNet's conv1: 144 taps for 121).

    One kernel module, _kernels.winograd, with two tile sizes:

    - winograd_f4, F(4x4, 3x3), undilated layers: 36 multiplies per 4x4
      output tile instead of 144. Its float32 error is ~1e-5 of the
      output's scale (im2col's ~5e-7): the transforms scale by up to 8.
    - winograd_f2, F(2x2, 3x3), dilated layers: 16 multiplies per 2x2
      tile instead of 36; each dilation phase of the output is tiled in
      place (the module's docstring). Also the forward and backward-data
      of undilated layers whose output 4x4 tiles cover badly (_tile).
    """

    name = "winograd"

    def supports(self, spec):
        if spec.stride == (1, 1):
            if (spec.R, spec.S) != (3, 3):
                return False, f"needs a 3x3 kernel, got {spec.R}x{spec.S}"
            return True, ""
        if phases.phase_kernel(spec) != (3, 3):
            return False, (f"needs stride 1, got stride={spec.stride} with a "
                           f"{spec.R}x{spec.S} kernel (strided kernels must span 3 "
                           f"taps of each stride phase: 5x5 or 6x6 at stride 2, "
                           f"9x9 to 12x12 at stride 4)")
        if spec.dilation != (1, 1):
            return False, (f"needs dilation 1 at stride {spec.stride}, got "
                           f"dilation={spec.dilation}")
        return True, ""

    @staticmethod
    def _run_spec(spec):
        """The stride-1 spec the kernels run: spec, or that over the
        input's stride phases."""
        return spec if spec.stride == (1, 1) else phases.phase_spec(spec)

    @staticmethod
    def _tile(spec, pass_name):
        """The tile of one pass ("forward", "backward_data" or
        "backward_weight"): F(2x2) for dilated layers; for undilated ones
        F(4x4), except the forward and backward-data when F(4x4)'s tiles
        span F2_PADDED_RATIO times the pixels F(2x2)'s span (5x5, 6x6, 9x9
        or 10x10 outputs): there the 2x2 tiles ran faster, wasting less
        and giving their GEMMs four times the tiles. The weight gradient
        keeps F(4x4), which won it or tied there (measurements in the
        commit body; benchmarks/winograd_tiles.py)."""
        if spec.dilation != (1, 1):
            return "winograd_f2"
        if pass_name == "backward_weight":
            return "winograd_f4"
        # The pass's output: y for the forward, grad_x for backward-data.
        oh, ow = (spec.OH, spec.OW) if pass_name == "forward" else (spec.H, spec.W)
        f4_pixels = 16 * WinogradConv.image_tiles("winograd_f4", oh, ow)
        f2_pixels = 4 * WinogradConv.image_tiles("winograd_f2", oh, ow)
        return "winograd_f2" if f4_pixels >= F2_PADDED_RATIO * f2_pixels else "winograd_f4"

    @staticmethod
    def image_tiles(tile, oh, ow):
        """Tiles of `tile` covering one undilated oh x ow output: the
        kernel's own tiling (winograd.tile_grid)."""
        rows, cols = winograd.tile_grid(tile, oh, ow, 1, 1)
        return rows * cols

    @staticmethod
    def _transform(w, tile):
        """(K, Cg, 3, 3) -> U (points, K, Cg), U[alpha*i+j] = (G w G^T)[i, j]."""
        u = memory.empty((winograd.points(tile), w.shape[0], w.shape[1]), w.dtype)
        winograd.transform_weights(np.ascontiguousarray(w), u, tile, kernel_threads(u.size))
        return u

    @staticmethod
    def _flipped(w, spec):
        """The kernel of backward-data: rotated by 180 degrees, in/out
        channels swapped within each group; (C, K/groups, 3, 3)."""
        G, Kg, Cg = spec.groups, spec.Kg, spec.Cg
        return np.ascontiguousarray(w.reshape(G, Kg, Cg, 3, 3).transpose(0, 2, 1, 3, 4)
                                    .reshape(spec.C, Kg, 3, 3)[:, :, ::-1, ::-1])

    def scratch_bytes(self, spec, backward):
        run = self._run_spec(spec)

        def elements(pass_name):
            return winograd.plan(self._tile(run, pass_name), pass_name, run.params,
                                 conv_threads(run, backward))["scratch_elements"]
        # Strided layers: the input's phases (or their gradient) besides.
        phased = 0 if run is spec else run.N * run.C * run.H * run.W
        if not backward:
            return (elements("forward") + phased) * spec.dtype.itemsize
        # Backward-data and the weight gradient run one after the other.
        return (max(elements("backward_data"), elements("backward_weight"))
                + phased) * spec.dtype.itemsize

    # Non-finite values go through im2col, whose result is PyTorch's: the
    # weights are checked before (_winograd_weights_ok), the images by the
    # kernels as they transform them (no extra pass over them), which then
    # ask for a rerun.

    def _derived(self, w, spec, weight_version, what):
        """(weights_ok, U) for the forward ("forward") or backward-data
        ("data", the flipped kernel), reused while w is unchanged."""
        run = self._run_spec(spec)
        tile = self._tile(run, "forward" if what == "forward" else "backward_data")

        def make():
            if not _winograd_weights_ok(w):
                return False, None
            kernel = w if run is spec else phases.phase_weights(w, spec)
            return True, self._transform(
                kernel if what == "forward" else self._flipped(kernel, run), tile)

        return DERIVED.get(w, weight_version, (tile, what, spec.groups, spec.stride), make)

    def forward(self, x, w, bias, y, spec, weight_version=None):
        run = self._run_spec(spec)
        ok, u = self._derived(w, spec, weight_version, "forward")
        if ok:
            xr = x if run is spec else phases.phase_input(x, spec, run)
            with _threads.blas_single():
                ok = winograd.forward(xr, u, bias, y, run.params,
                                      self._tile(run, "forward"), conv_threads(run))
        if not ok:  # weights or images Winograd leaves to im2col
            _REGISTRY["im2col"].forward(x, w, bias, y, spec)

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        im2col = _REGISTRY["im2col"]
        run = self._run_spec(spec)
        nt = conv_threads(run, True)
        if need_x:
            # grad_x = full correlation of grad_y with the flipped kernel.
            ok, u = self._derived(w, spec, weight_version, "data")
            if ok:
                gx = grad_x if run is spec else memory.empty((run.N, run.C, run.H, run.W),
                                                             grad_x.dtype)
                with _threads.blas_single():
                    ok = winograd.backward_data(grad_y, u, gx, run.params,
                                                self._tile(run, "backward_data"), nt)
                if ok and run is not spec:
                    phases.input_grad(gx, spec, run, grad_x)
                del gx
            if not ok:
                im2col.backward(grad_y, x, w, grad_x, grad_w, True, False, spec)
        if need_w:
            # The adjoint of the forward: dU = sum over tiles of dM V^T (a
            # GEMM per point), then grad_w = G^T dU G.
            tile = self._tile(run, "backward_weight")
            du = memory.empty((winograd.points(tile), run.K, run.Cg), x.dtype)
            xr = x if run is spec else phases.phase_input(x, spec, run)
            with _threads.blas_single():
                ok = winograd.backward_weight(xr, grad_y, du, run.params, tile, nt)
            del xr
            if ok:
                gw = grad_w if run is spec else np.empty((run.K, run.Cg, 3, 3), grad_w.dtype)
                winograd.untransform_weight_grad(du, gw, tile, kernel_threads(du.size))
                if run is not spec:
                    phases.weight_grad(gw, spec, grad_w)
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
