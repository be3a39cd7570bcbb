"""Plain float64 NumPy references for pooling, batch normalisation and local
response normalisation, written from PyTorch's definitions with explicit
loops over output positions (vectorised only over batch and channels), so
the tests compare the kernels against something independent and readable.
"""
import math

import numpy as np


def _as_pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def pool_out_size(size, k, s, p, d, ceil_mode):
    """PyTorch's pooling_output_shape, written out again on purpose."""
    numerator = size + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        out = math.ceil(numerator / s) + 1
        # The last window must start inside the input or the left padding.
        if (out - 1) * s >= size + p:
            out -= 1
    else:
        out = numerator // s + 1
    return out


def _max_of_window(win):
    """win: (N, C, T) taps in row-major window order (T may be 0).
    -> value (N, C) and position (N, C) into the tap list, or -1 when empty.
    A NaN wins (the last NaN, as PyTorch's `val > max || isnan(val)` scan
    keeps replacing), else the first maximum."""
    N, C, T = win.shape
    if T == 0:
        return np.full((N, C), -np.inf), np.full((N, C), -1)
    pos = np.argmax(win, axis=2)       # first maximum (NaN also counts first)
    isnan = np.isnan(win)
    last_nan = T - 1 - np.argmax(isnan[:, :, ::-1], axis=2)
    pos = np.where(isnan.any(axis=2), last_nan, pos)
    val = np.take_along_axis(win, pos[:, :, None], axis=2)[:, :, 0]
    return val, pos


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode=False):
    """-> (y, indices) in float64 / int64."""
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    kh, kw = _as_pair(kernel_size)
    sh, sw = _as_pair(kernel_size if stride is None else stride)
    ph, pw = _as_pair(padding)
    dh, dw = _as_pair(dilation)
    OH = pool_out_size(H, kh, sh, ph, dh, ceil_mode)
    OW = pool_out_size(W, kw, sw, pw, dw, ceil_mode)
    y = np.empty((N, C, OH, OW))
    idx = np.empty((N, C, OH, OW), dtype=np.int64)
    for oh in range(OH):
        for ow in range(OW):
            taps = [(h, w)
                    for h in (oh * sh - ph + i * dh for i in range(kh))
                    for w in (ow * sw - pw + j * dw for j in range(kw))
                    if 0 <= h < H and 0 <= w < W]
            win = np.stack([x[:, :, h, w] for h, w in taps], axis=2) if taps \
                else np.empty((N, C, 0))
            val, pos = _max_of_window(win)
            flat = np.array([h * W + w for h, w in taps] + [-1])
            y[:, :, oh, ow] = val
            idx[:, :, oh, ow] = flat[pos]
    return y, idx


def max_pool2d_backward(grad_y, indices, input_shape):
    gx = np.zeros(input_shape)
    N, C, H, W = input_shape
    for n in range(N):
        for c in range(C):
            plane = gx[n, c].reshape(-1)
            for g, i in zip(grad_y[n, c].reshape(-1), indices[n, c].reshape(-1)):
                if i >= 0:
                    plane[i] += g
    return gx


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    kh, kw = _as_pair(kernel_size)
    sh, sw = _as_pair(kernel_size if stride is None else stride)
    ph, pw = _as_pair(padding)
    OH = pool_out_size(H, kh, sh, ph, 1, ceil_mode)
    OW = pool_out_size(W, kw, sw, pw, 1, ceil_mode)
    y = np.zeros((N, C, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            h0, w0 = oh * sh - ph, ow * sw - pw
            # The window including padding, but never past the padding.
            h1, w1 = min(h0 + kh, H + ph), min(w0 + kw, W + pw)
            padded_count = (h1 - h0) * (w1 - w0)
            rows = range(max(h0, 0), min(h1, H))
            cols = range(max(w0, 0), min(w1, W))
            if len(rows) == 0 or len(cols) == 0:
                continue
            total = x[:, :, rows.start:rows.stop, cols.start:cols.stop].sum(axis=(2, 3))
            divisor = padded_count if count_include_pad else len(rows) * len(cols)
            y[:, :, oh, ow] = total / divisor
    return y


def avg_pool2d_backward(grad_y, input_shape, kernel_size, stride=None,
                        padding=0, ceil_mode=False, count_include_pad=True):
    """Each output's gradient shared out over its window's input taps."""
    N, C, H, W = input_shape
    kh, kw = _as_pair(kernel_size)
    sh, sw = _as_pair(kernel_size if stride is None else stride)
    ph, pw = _as_pair(padding)
    gx = np.zeros(input_shape)
    for oh in range(grad_y.shape[2]):
        for ow in range(grad_y.shape[3]):
            h0, w0 = oh * sh - ph, ow * sw - pw
            h1, w1 = min(h0 + kh, H + ph), min(w0 + kw, W + pw)
            padded_count = (h1 - h0) * (w1 - w0)
            rows = range(max(h0, 0), min(h1, H))
            cols = range(max(w0, 0), min(w1, W))
            divisor = padded_count if count_include_pad else len(rows) * len(cols)
            for h in rows:
                for w in cols:
                    gx[:, :, h, w] += grad_y[:, :, oh, ow] / divisor
    return gx


def _adaptive_ranges(in_size, out_size):
    return [(i * in_size // out_size, -(-(i + 1) * in_size // out_size))
            for i in range(out_size)]


def adaptive_avg_pool2d(x, output_size):
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    OH, OW = _as_pair(output_size)
    y = np.empty((N, C, OH, OW))
    for oh, (h0, h1) in enumerate(_adaptive_ranges(H, OH)):
        for ow, (w0, w1) in enumerate(_adaptive_ranges(W, OW)):
            y[:, :, oh, ow] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


def adaptive_max_pool2d(x, output_size):
    """-> (y, indices)."""
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    OH, OW = _as_pair(output_size)
    y = np.empty((N, C, OH, OW))
    idx = np.empty((N, C, OH, OW), dtype=np.int64)
    for oh, (h0, h1) in enumerate(_adaptive_ranges(H, OH)):
        for ow, (w0, w1) in enumerate(_adaptive_ranges(W, OW)):
            taps = [(h, w) for h in range(h0, h1) for w in range(w0, w1)]
            win = np.stack([x[:, :, h, w] for h, w in taps], axis=2)
            val, pos = _max_of_window(win)
            y[:, :, oh, ow] = val
            idx[:, :, oh, ow] = np.array([h * W + w for h, w in taps])[pos]
    return y, idx


def linear_map_transpose(forward, input_shape, grad_y):
    """grad_x of a linear map by building it column by column:
    grad_x[i] = <forward(e_i), grad_y>. Independent of any backward code."""
    gx = np.zeros(input_shape)
    flat = gx.reshape(-1)
    for i in range(flat.size):
        e = np.zeros(flat.size)
        e[i] = 1.0
        flat[i] = np.sum(forward(e.reshape(input_shape)) * grad_y)
    return gx


# ---------------------------------------------------------------------------
# Batch normalisation

def _bn_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, x):
    """(C,) -> broadcastable against x (N, C, ...)."""
    return np.asarray(v, dtype=np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))


def batch_norm(x, running_mean, running_var, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5):
    """-> (y, mean, invstd, new_running_mean, new_running_var), float64;
    the running arrays are not touched."""
    x = np.asarray(x, dtype=np.float64)
    C = x.shape[1]
    count = x.size // C
    if training:
        mean = x.mean(axis=_bn_axes(x))
        var = ((x - _per_channel(mean, x)) ** 2).mean(axis=_bn_axes(x))
    else:
        mean = np.asarray(running_mean, dtype=np.float64)
        var = np.asarray(running_var, dtype=np.float64)
    invstd = 1.0 / np.sqrt(var + eps)
    y = (x - _per_channel(mean, x)) * _per_channel(invstd, x)
    if weight is not None:
        y = y * _per_channel(weight, x)
    if bias is not None:
        y = y + _per_channel(bias, x)
    new_rm = new_rv = None
    if training and running_mean is not None:
        new_rm = (1 - momentum) * np.asarray(running_mean, np.float64) + momentum * mean
        new_rv = ((1 - momentum) * np.asarray(running_var, np.float64)
                  + momentum * var * count / (count - 1))
    return y, mean, invstd, new_rm, new_rv


def batch_norm_backward(grad_y, x, mean, invstd, weight=None, training=True):
    """The chain rule step by step (cs231n's staged derivation), not the
    closed formula the kernel uses: through xhat, then var, then mean."""
    x = np.asarray(x, dtype=np.float64)
    gy = np.asarray(grad_y, dtype=np.float64)
    axes = _bn_axes(x)
    m = x.size // x.shape[1]
    mu = _per_channel(mean, x)
    inv = _per_channel(invstd, x)
    gamma = _per_channel(np.ones(x.shape[1]) if weight is None else weight, x)
    xhat = (x - mu) * inv
    grad_bias = gy.sum(axis=axes)
    grad_weight = (gy * xhat).sum(axis=axes)
    dxhat = gy * gamma
    if not training:
        return dxhat * inv, grad_weight, grad_bias
    # var = mean((x - mu)^2), invstd = (var + eps)^-1/2
    dvar = (dxhat * (x - mu) * -0.5 * inv ** 3).sum(axis=axes, keepdims=True)
    dmu = ((-dxhat * inv).sum(axis=axes, keepdims=True)
           + dvar * (-2.0 * (x - mu)).sum(axis=axes, keepdims=True) / m)
    dx = dxhat * inv + dvar * 2.0 * (x - mu) / m + dmu / m
    return dx, grad_weight, grad_bias


# ---------------------------------------------------------------------------
# Local response normalisation

def _lrn_window(c, size, C):
    """Channels averaged for output channel c, as PyTorch pads them."""
    return range(max(c - size // 2, 0), min(c + (size - 1) // 2, C - 1) + 1)


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    x = np.asarray(x, dtype=np.float64)
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        win = _lrn_window(c, size, x.shape[1])
        d = k + alpha / size * (x[:, win.start:win.stop] ** 2).sum(axis=1)
        y[:, c] = x[:, c] / d ** beta
    return y


def local_response_norm_backward(grad_y, x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Output channel by output channel: dy[c]/dx[j] for each j of its window."""
    x = np.asarray(x, dtype=np.float64)
    gx = np.zeros_like(x)
    for c in range(x.shape[1]):
        win = _lrn_window(c, size, x.shape[1])
        d = k + alpha / size * (x[:, win.start:win.stop] ** 2).sum(axis=1)
        gx[:, c] += grad_y[:, c] * d ** -beta
        for j in win:
            # y[c] = x[c] * d^-beta, d depends on x[j] through alpha/size * x[j]^2
            gx[:, j] += (grad_y[:, c] * x[:, c] * -beta * d ** (-beta - 1)
                         * alpha / size * 2 * x[:, j])
    return gx
