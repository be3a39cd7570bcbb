"""Plain float64 NumPy references for the norms, activations, linear and
losses, written from the PyTorch documentation's formulas without sharing
any code with convcore. Slow and obvious on purpose."""
import math

import numpy as np


# --- normalisation ------------------------------------------------------------

def _normalise(v, eps):
    """(v - mean) / sqrt(biased var + eps) over all of v."""
    mean = v.mean()
    var = ((v - mean) ** 2).mean()
    return (v - mean) / math.sqrt(var + eps)


def group_norm(x, G, weight=None, bias=None, eps=1e-5):
    x = np.asarray(x, dtype=np.float64)
    N, C = x.shape[:2]
    cg = C // G
    y = np.empty_like(x)
    for n in range(N):
        for g in range(G):
            y[n, g * cg:(g + 1) * cg] = _normalise(x[n, g * cg:(g + 1) * cg], eps)
    shape = (1, C) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * np.asarray(weight, np.float64).reshape(shape)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(shape)
    return y


def instance_norm(x, weight=None, bias=None, eps=1e-5):
    return group_norm(x, x.shape[1], weight, bias, eps)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    x = np.asarray(x, dtype=np.float64)
    k = len(normalized_shape)
    lead = x.shape[:x.ndim - k]
    y = np.empty_like(x)
    for idx in np.ndindex(*lead):
        y[idx] = _normalise(x[idx], eps)
    if weight is not None:
        y = y * np.asarray(weight, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


# --- activations --------------------------------------------------------------

def _elementwise(f, x):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for i, v in np.ndenumerate(x):
        out[i] = f(v)
    return out


def relu(x):
    return _elementwise(lambda v: v if v > 0 else 0.0, x)


def leaky_relu(x, negative_slope=0.01):
    return _elementwise(lambda v: v if v > 0 else negative_slope * v, x)


def tanh(x):
    return _elementwise(math.tanh, x)


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for i, v in np.ndenumerate(x):
        out[i] = 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
    return out


def softplus(x, beta=1.0, threshold=20.0):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for i, v in np.ndenumerate(x):
        bv = beta * v
        if bv > threshold:
            out[i] = v
        else:  # log(1 + e^bv) = max(bv, 0) + log(1 + e^-|bv|)
            out[i] = (max(bv, 0.0) + math.log1p(math.exp(-abs(bv)))) / beta
    return out


def softmax(x, axis=1):
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx]
        e = np.array([math.exp(v - row.max()) for v in row])
        out[idx] = e / e.sum()
    return np.moveaxis(out, -1, axis)


def log_softmax(x, axis=1):
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx]
        m = row.max()
        out[idx] = row - m - math.log(sum(math.exp(v - m) for v in row))
    return np.moveaxis(out, -1, axis)


# --- linear -------------------------------------------------------------------

def linear(x, weight, bias=None):
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    flat = x.reshape(-1, x.shape[-1])
    y = np.zeros((flat.shape[0], weight.shape[0]))
    for i in range(flat.shape[0]):
        for o in range(weight.shape[0]):
            y[i, o] = sum(flat[i, j] * weight[o, j] for j in range(flat.shape[1]))
            if bias is not None:
                y[i, o] += bias[o]
    return y.reshape(x.shape[:-1] + (weight.shape[0],))


# --- losses -------------------------------------------------------------------

def cross_entropy(logits, target, weight=None, label_smoothing=0.0,
                  reduction="mean"):
    """torch's definition: per sample (1-eps) * w[t] * -logp[t]
    + eps/C * sum_c w[c] * -logp[c]; "mean" divides by sum_i w[t_i]."""
    logits = np.moveaxis(np.asarray(logits, np.float64), 1, -1)
    C = logits.shape[-1]
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    losses = np.zeros(target.shape)
    denom = 0.0
    for idx in np.ndindex(*target.shape):
        logp = log_softmax(logits[idx][None, :], axis=1)[0]
        t = int(target[idx])
        nll = -w[t] * logp[t]
        smooth = -sum(w[c] * logp[c] for c in range(C)) / C
        losses[idx] = (1 - label_smoothing) * nll + label_smoothing * smooth
        denom += w[t]
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / denom


def cross_entropy_probs(logits, q, weight=None, label_smoothing=0.0,
                        reduction="mean"):
    """torch's class-probability form: per sample -sum_c w[c] q'[c] logp[c]
    with q' = (1-eps) q + eps/C; "mean" divides by the number of samples."""
    logits = np.moveaxis(np.asarray(logits, np.float64), 1, -1)
    q = np.moveaxis(np.asarray(q, np.float64), 1, -1)
    C = logits.shape[-1]
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    losses = np.zeros(logits.shape[:-1])
    for idx in np.ndindex(*losses.shape):
        logp = log_softmax(logits[idx][None, :], axis=1)[0]
        qs = (1 - label_smoothing) * q[idx] + label_smoothing / C
        losses[idx] = -sum(w[c] * qs[c] * logp[c] for c in range(C))
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.sum() / losses.size


def mse_loss(x, t, reduction="mean"):
    d = (np.asarray(x, np.float64) - np.asarray(t, np.float64)) ** 2
    return {"none": d, "sum": d.sum(), "mean": d.mean()}[reduction]


def bce_with_logits(x, t, weight=None, pos_weight=None, reduction="mean"):
    """-w * [pw * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x))]."""
    x = np.asarray(x, np.float64)
    t = np.asarray(t, np.float64)
    pw = np.ones_like(x) if pos_weight is None else np.broadcast_to(pos_weight, x.shape)
    w = np.ones_like(x) if weight is None else np.broadcast_to(weight, x.shape)
    out = np.empty_like(x)
    for i, v in np.ndenumerate(x):
        # log(sigmoid(v)) = -softplus(-v); log(1 - sigmoid(v)) = -softplus(v)
        log_p = -softplus(np.array([-v]), threshold=math.inf)[0]
        log_1mp = -softplus(np.array([v]), threshold=math.inf)[0]
        out[i] = -w[i] * (pw[i] * t[i] * log_p + (1 - t[i]) * log_1mp)
    return {"none": out, "sum": out.sum(), "mean": out.mean()}[reduction]
