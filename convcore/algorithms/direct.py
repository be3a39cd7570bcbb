"""Direct convolution: loops over the taps, no BLAS (_kernels.conv_direct;
_kernels.conv_depthwise for one input channel per group)."""
from convcore._kernels import conv_depthwise, conv_direct
from convcore._runtime.threads import conv_threads
from convcore.algorithms.base import ConvAlgorithm


class DirectConv(ConvAlgorithm):
    """Direct loops over the taps; no BLAS. Strong where the GEMM would be
    thin: depthwise, few channels, tiny images. Depthwise layers (one input
    channel per group) run their own kernels (_kernels.conv_depthwise: a
    padded copy of the plane, all nine taps of a 3x3 per output in
    registers, other kernels up to three taps per pass); everything else
    _kernels.conv_direct: in float32 its register-blocked kernels (vectors
    along output rows, stride 1), or on small images over many channels
    its channel-vector kernel (vectors along the output channels, tiles
    across images, padding taps skipped), else the generic per-tap loops."""

    name = "direct"

    @staticmethod
    def _depthwise(spec):
        """Whether spec runs the depthwise kernels."""
        return conv_depthwise.supports(spec.Cg, spec.R, spec.S)

    def forward(self, x, w, bias, y, spec, weight_version=None):
        kernels = conv_depthwise if self._depthwise(spec) else conv_direct
        kernels.forward(x, w, bias, y, spec.params, conv_threads(spec))

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        nt = conv_threads(spec, True)
        kernels = conv_depthwise if self._depthwise(spec) else conv_direct
        if need_x:
            kernels.backward_data(grad_y, w, grad_x, spec.params, nt)
        if need_w:
            kernels.backward_weight(grad_y, x, grad_w, spec.params, nt)

    def scratch_bytes(self, spec, backward):
        kernels = conv_depthwise if self._depthwise(spec) else conv_direct
        return kernels.scratch_bytes(spec.params, conv_threads(spec, backward), backward,
                                     spec.dtype.itemsize)
