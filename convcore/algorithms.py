"""Registry of convolution algorithms and the choice made by "auto".

Every algorithm accepts the same arguments and gives the same result to
float rounding; a specialised one says what it supports through
`supports(spec)`. `select_algorithm(spec)` is the "auto" rule, exposed so
tests and the benchmark can see what it picks.

    conv2d(..., algorithm) --> get_algorithm(name, spec) --> Algorithm
                                  | "auto": select_algorithm(spec)
                                  v
              DirectConv  --> _kernels.conv_direct (prange, no BLAS)
              Im2colConv  --> _kernels.conv_gemm   (prange + 1-thread BLAS,
                                                    or n-thread BLAS alone)
"""
from convcore import _threads, autotune
from convcore._threads import kernel_threads
import numpy as np

from convcore._kernels import conv_direct, conv_gemm, conv_winograd, openmp_info


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
    """Direct loops over the taps; no scratch, no BLAS. Strong where the
    GEMM would be thin: depthwise, few channels, tiny images."""

    name = "direct"

    def forward(self, x, w, bias, y, spec):
        conv_direct.forward(x, w, bias, y, spec.geom, kernel_threads(spec.flops()))

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec):
        nt = kernel_threads(spec.flops())
        if need_x:
            conv_direct.backward_data(grad_y, w, grad_x, spec.geom, nt)
        if need_w:
            conv_direct.backward_weight(grad_y, x, grad_w, spec.geom, nt)

    def scratch_bytes(self, spec, backward):
        # The weight gradient keeps R*S*OW partial sums per thread.
        if not backward:
            return 0
        return kernel_threads(spec.flops()) * spec.R * spec.S * spec.OW * spec.dtype.itemsize


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
        nt, batch_parallel, _ = self._plan(self._items(spec, backward), spec)
        elements = conv_gemm.scratch_bytes(
            (spec.N, spec.C, spec.H, spec.W), (spec.K, spec.Cg, spec.R, spec.S),
            spec.out_shape, spec.geom, nt, batch_parallel, backward)
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


class WinogradConv(ConvAlgorithm):
    """Winograd F(2x2, 3x3) for 3x3 kernels at stride 1 and dilation 1:
    16 multiplies per 2x2 output tile instead of 36, as 16 GEMMs over the
    channels. Forward and backward-data (the same transform on grad_y with
    the flipped kernel); the weight gradient goes through im2col + GEMM."""

    name = "winograd"
    # Interpolation matrix of the weight transform U = G g G^T.
    _G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

    def supports(self, spec):
        if (spec.R, spec.S) != (3, 3):
            return False, f"needs a 3x3 kernel, got {spec.R}x{spec.S}"
        if spec.stride != (1, 1) or spec.dilation != (1, 1):
            return False, (f"needs stride 1 and dilation 1, got stride={spec.stride}, "
                           f"dilation={spec.dilation}")
        if max(spec.padding) > 2 or spec.padding_total != (2 * spec.padding[0], 2 * spec.padding[1]):
            return False, f"needs symmetric padding <= 2, got {spec.padding_total} in total"
        return True, ""

    def _transform(self, w):
        """(K, Cg, 3, 3) -> U of shape (16, K, Cg), U[4i+j] = (G w G^T)[i, j]."""
        G = self._G.astype(w.dtype)
        u = np.einsum("ir,kcrs,js->ijkc", G, w, G, optimize=True)
        return np.ascontiguousarray(u.reshape(16, w.shape[0], w.shape[1]))

    def _run(self, x, w, bias, y, pad, groups, work):
        threads = kernel_threads(work)
        with _threads.blas_threads(1):
            conv_winograd.forward(x, self._transform(w), bias, y, pad[0], pad[1],
                                  groups, threads)

    def scratch_bytes(self, spec, backward):
        nt = kernel_threads(spec.flops())
        size = spec.dtype.itemsize
        if not backward:
            return conv_winograd.scratch_elements(spec.C, spec.K, spec.OW, nt) * size
        # backward-data runs the forward on grad_y (channels swapped, width W),
        # then the weight gradient runs through im2col: the larger of the two.
        data = conv_winograd.scratch_elements(spec.K, spec.C, spec.W, nt) * size
        return max(data, _REGISTRY["im2col"].scratch_bytes(spec, True))

    def forward(self, x, w, bias, y, spec):
        self._run(x, w, bias, y, spec.padding, spec.groups, spec.flops())

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec):
        if need_x:
            # grad_x = full correlation of grad_y with the kernel rotated by
            # 180 degrees and its in/out channels swapped within each group.
            G, Kg, Cg = spec.groups, spec.Kg, spec.Cg
            w_t = (w.reshape(G, Kg, Cg, 3, 3).transpose(0, 2, 1, 3, 4)
                   .reshape(spec.C, Kg, 3, 3)[:, :, ::-1, ::-1])
            self._run(grad_y, np.ascontiguousarray(w_t), np.empty(0, x.dtype), grad_x,
                      (2 - spec.padding[0], 2 - spec.padding[1]), G, spec.flops())
        if need_w:
            _REGISTRY["im2col"].backward(grad_y, x, w, grad_x, grad_w, False, True, spec)


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
      does 16 multiplies where im2col does 36; it wins by 1.2-2.2x once
      min(C/groups, K/groups) >= 16 and that times OH*OW is >= 6000. Below
      that its 16 GEMMs (inner dimension C/groups) are too small and its
      transforms dominate.
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
    if (channels >= 16 and channels * spec.OH * spec.OW >= 6000
            and _REGISTRY["winograd"].supports(spec)[0]):
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
