"""A strided convolution as a stride-1 one over the input's stride phases
(space-to-depth), so that the stride-1 kernels serve it.

With stride (sh, sw), output (oh, ow) reads padded input rows sh*oh + r.
Writing r = sh*a + i (0 <= i < sh) splits the sum by phase (i, j):

    y[n, k, oh, ow] = sum over c, i, j, a, b of
        w'[k, (c, i, j), a, b] * x'[n, (c, i, j), oh + a, ow + b]

    x'[n, (c, i, j), a, b] = x_padded[n, c, sh*a + i, sw*b + j]
    w'[k, (c, i, j), a, b] = w[k, c, sh*a + i, sw*b + j]   (0 past R, S)

a stride-1, unpadded convolution with C*sh*sw channels and a
ceil(R/sh) x ceil(S/sw) kernel. AlexNet's 11x11 stride-4 conv1 becomes a
3x3 convolution over 48 channels, which Winograd runs (WinogradConv).
Every input pixel lands in exactly one phase, so the input gradient is x'
's gradient put back in place, and the weight gradient w' 's with the
zero taps dropped. Groups keep their channels together: (c, i, j) is
c-major.
"""
import functools

import numpy as np

from convcore._runtime import memory
from convcore.functional._conv_spec import conv_spec


def phase_kernel(spec):
    """(rows, columns) of the kernel of each phase: ceil(R/sh) x ceil(S/sw)."""
    return -(-spec.R // spec.stride[0]), -(-spec.S // spec.stride[1])


@functools.lru_cache(maxsize=256)
def phase_spec(spec):
    """The stride-1, unpadded ConvSpec over the phases of `spec`'s input
    (undilated): the same output, N and K and groups."""
    sh, sw = spec.stride
    pr, ps = phase_kernel(spec)
    return conv_spec((spec.N, spec.C * sh * sw, spec.OH + pr - 1, spec.OW + ps - 1),
                     (spec.K, spec.Cg * sh * sw, pr, ps), spec.dtype, 1, 0, 1,
                     spec.groups, "conv2d")


def _valid(count, size, stride, phase, pad):
    """Phase positions [lo, hi) of `count` whose input index
    stride*a + phase - pad falls in [0, size); and the first index."""
    lo = max(0, -(-(pad - phase) // stride))
    hi = min(count, (size - 1 + pad - phase) // stride + 1)
    return lo, max(lo, hi), stride * lo + phase - pad


def _phase_shape(run, spec):
    """run's input shape with the phases apart: (N, C, sh, sw, Hs, Ws)."""
    sh, sw = spec.stride
    return (spec.N, spec.C, sh, sw, run.H, run.W)


def _phase_slices(spec, run):
    """Per phase (i, j): the positions of x' that read the image, as
    (rows, columns) slices of the phase, and the strided (rows, columns)
    slices of x they read, in the same order."""
    sh, sw = spec.stride
    for i in range(sh):
        a0, a1, h0 = _valid(run.H, spec.H, sh, i, spec.padding[0])
        for j in range(sw):
            b0, b1, w0 = _valid(run.W, spec.W, sw, j, spec.padding[1])
            yield (i, j, (slice(a0, a1), slice(b0, b1)),
                   (slice(h0, h0 + sh * (a1 - a0), sh), slice(w0, w0 + sw * (b1 - b0), sw)))


def phase_input(x, spec, run):
    """x' (run's input) from x: each phase a strided copy of x, zeros where
    it reads the padding or past the image."""
    xs = memory.empty((run.N, run.C, run.H, run.W), x.dtype)
    view = xs.reshape(_phase_shape(run, spec))
    whole = (slice(0, run.H), slice(0, run.W))
    for i, j, inside, source in _phase_slices(spec, run):
        dst = view[:, :, i, j]
        if inside != whole:
            dst[...] = 0
        dst[(Ellipsis,) + inside] = x[(Ellipsis,) + source]
    return xs


def input_grad(grad_xs, spec, run, out):
    """out (x's shape) = the gradient of x from that of x' (the adjoint of
    phase_input): each input pixel from its one phase; 0 for pixels no
    output reads (past the last window)."""
    view = grad_xs.reshape(_phase_shape(run, spec))
    for i, j, inside, source in _phase_slices(spec, run):
        out[(Ellipsis,) + source] = view[(slice(None), slice(None), i, j) + inside]
    # Rows and columns past the last window are in no phase.
    sh, sw = spec.stride
    rows = min(spec.H, sh * run.H - spec.padding[0])
    cols = min(spec.W, sw * run.W - spec.padding[1])
    out[:, :, rows:] = 0
    out[:, :, :rows, cols:] = 0
    return out


def phase_weights(w, spec):
    """w' (K, Cg*sh*sw, ceil(R/sh), ceil(S/sw)) from w: taps past R, S are 0."""
    sh, sw = spec.stride
    pr, ps = phase_kernel(spec)
    padded = np.zeros((spec.K, spec.Cg, pr * sh, ps * sw), w.dtype)
    padded[:, :, :spec.R, :spec.S] = w
    return np.ascontiguousarray(
        padded.reshape(spec.K, spec.Cg, pr, sh, ps, sw).transpose(0, 1, 3, 5, 2, 4)
        .reshape(spec.K, spec.Cg * sh * sw, pr, ps))


def weight_grad(grad_ws, spec, out):
    """out (w's shape) = the gradient of w from that of w' (the adjoint of
    phase_weights: the padding taps dropped)."""
    sh, sw = spec.stride
    pr, ps = phase_kernel(spec)
    full = (grad_ws.reshape(spec.K, spec.Cg, sh, sw, pr, ps).transpose(0, 1, 4, 2, 5, 3)
            .reshape(spec.K, spec.Cg, pr * sh, ps * sw))
    out[...] = full[:, :, :spec.R, :spec.S]
    return out
