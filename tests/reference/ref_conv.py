"""A readable float64 reference for 2-D convolution and its gradients.

Written independently of the kernels: pad explicitly, then for every tap
(r, s) of the kernel take the strided window of the padded input that the
tap sees and contract it with that tap's weights. Gradients are the adjoint
of the same loop (scatter-add into the padded input, or contract with the
window). Slow but obviously right; used only by the tests.
"""
import numpy as np


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def resolve_padding(padding, kernel, dilation):
    """-> ((top, bottom), (left, right)) as PyTorch pads."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        out = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            out.append((total // 2, total - total // 2))
        return tuple(out)
    ph, pw = pair(padding)
    return (ph, ph), (pw, pw)


def _geometry(x_shape, w_shape, stride, padding, dilation):
    N, C, H, W = x_shape
    K, Cg, R, S = w_shape
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    (pt, pb), (pl, pr) = resolve_padding(padding, (R, S), (dh, dw))
    Hp, Wp = H + pt + pb, W + pl + pr
    OH = (Hp - dh * (R - 1) - 1) // sh + 1
    OW = (Wp - dw * (S - 1) - 1) // sw + 1
    return (sh, sw), (dh, dw), (pt, pb, pl, pr), (Hp, Wp), (OH, OW)


def _window(r, s, stride, dilation, out):
    """Slices of the padded input read by tap (r, s) for every output."""
    (sh, sw), (dh, dw), (OH, OW) = stride, dilation, out
    return (slice(r * dh, r * dh + sh * (OH - 1) + 1, sh),
            slice(s * dw, s * dw + sw * (OW - 1) + 1, sw))


def conv2d_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    st, di, (pt, pb, pl, pr), _, out = _geometry(x.shape, w.shape, stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    Kg = K // groups
    y = np.zeros((N, K) + out)
    for g in range(groups):
        xg = xp[:, g * Cg:(g + 1) * Cg]
        wg = w[g * Kg:(g + 1) * Kg]
        for r in range(R):
            for s in range(S):
                hs, ws = _window(r, s, st, di, out)
                # (N, Cg, OH, OW) x (Kg, Cg) -> (N, Kg, OH, OW)
                y[:, g * Kg:(g + 1) * Kg] += np.einsum(
                    "nchw,kc->nkhw", xg[:, :, hs, ws], wg[:, :, r, s])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv2d_backward_ref(gy, x, w, stride=1, padding=0, dilation=1, groups=1):
    """-> (grad_x, grad_w, grad_b) of sum(conv2d(x, w, b) * gy)."""
    gy = np.asarray(gy, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    st, di, (pt, pb, pl, pr), (Hp, Wp), out = _geometry(x.shape, w.shape, stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    gxp = np.zeros((N, C, Hp, Wp))
    gw = np.zeros(w.shape)
    Kg = K // groups
    for g in range(groups):
        cs, ks = slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)
        for r in range(R):
            for s in range(S):
                hs, ws = _window(r, s, st, di, out)
                gxp[:, cs, hs, ws] += np.einsum("nkhw,kc->nchw", gy[:, ks], w[ks, :, r, s])
                gw[ks, :, r, s] = np.einsum("nkhw,nchw->kc", gy[:, ks], xp[:, cs, hs, ws])
    gx = gxp[:, :, pt:pt + H, pl:pl + W]
    return gx, gw, gy.sum(axis=(0, 2, 3))
