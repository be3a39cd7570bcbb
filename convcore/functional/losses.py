"""Losses on logits and their gradients, as torch.nn.functional:
cross_entropy (class weights, label smoothing), mse_loss and
binary_cross_entropy_with_logits (weight, pos_weight).

reduction "mean" and "sum" return a Python float (summed in float64);
"none" returns the per-element losses in the input's dtype. Each
*_backward takes the forward's arguments plus `grad`, the upstream
gradient of the loss (a number, or an array of the per-element loss shape
for reduction="none"), and returns the gradient with respect to the
logits/input in its dtype.
"""
import math
import numbers

import numpy as np

from convcore.utils.validation import as_float_array
from convcore.functional.activations import log_softmax, sigmoid

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction, fn):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _reduce(loss, reduction, denominator=None):
    """loss array -> float ("sum", "mean") or the array itself ("none")."""
    if reduction == "none":
        return loss
    total = float(np.sum(loss, dtype=np.float64))
    if reduction == "sum":
        return total
    denominator = loss.size if denominator is None else denominator
    # An empty batch (or zero total weight) gives nan, as in torch.
    return total / denominator if denominator else math.nan


def _upstream(grad, reduction, shape, dtype, fn):
    """The upstream gradient, broadcastable against the per-element loss."""
    if reduction == "none":
        g = as_float_array(grad, "grad", dtype=dtype, fn=fn)
        if g.shape != tuple(shape):
            raise ValueError(f"{fn}: with reduction='none', grad must have the loss "
                             f"shape {tuple(shape)}, got {g.shape}")
        return g
    if isinstance(grad, (bool, np.bool_)) or not isinstance(grad, numbers.Real):
        raise TypeError(f"{fn}: with reduction={reduction!r}, grad must be a number, "
                        f"got {type(grad).__name__}")
    return dtype.type(grad)


def _same_shape(a, name, x, fn):
    a = as_float_array(a, name, dtype=x.dtype, fn=fn)
    if a.shape != x.shape:
        raise ValueError(f"{fn}: {name} has shape {a.shape} but input has shape {x.shape}")
    return a


# --- cross entropy --------------------------------------------------------------

def _ce_inputs(logits, target, weight, label_smoothing, reduction, fn):
    """Checked (logits, target, weight, label_smoothing, soft): target is
    either integer class indices (N, d1, ...) or, when it is a float array
    of the logits' shape, class probabilities (soft=True), as in torch."""
    logits = as_float_array(logits, "logits", fn=fn)
    if logits.ndim < 2:
        raise ValueError(f"{fn}: logits must be (N, C) or (N, C, d1, ...), got shape "
                         f"{logits.shape}")
    C = logits.shape[1]
    if not isinstance(target, np.ndarray):
        raise TypeError(f"{fn}: target must be a numpy.ndarray of class indices, "
                        f"got {type(target).__name__}")
    soft = target.dtype.kind == "f" and target.shape == logits.shape
    if soft:
        target = as_float_array(target, "target", dtype=logits.dtype, fn=fn)
    elif not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"{fn}: target must hold integer class indices, got dtype "
                        f"{target.dtype} (shape {target.shape}); float targets are "
                        f"class probabilities only with the logits' shape {logits.shape}")
    expected = logits.shape[:1] + logits.shape[2:]
    if not soft and target.shape != expected:
        raise ValueError(f"{fn}: target has shape {target.shape} but logits of shape "
                         f"{logits.shape} need target shape {expected}")
    if not soft and target.size and (target.min() < 0 or target.max() >= C):
        raise ValueError(f"{fn}: target values must be class indices in [0, {C}) "
                         f"for logits of shape {logits.shape}, found values in "
                         f"[{target.min()}, {target.max()}]")
    if weight is not None:
        weight = as_float_array(weight, "weight", ndim=1, dtype=logits.dtype, fn=fn)
        if weight.shape != (C,):
            raise ValueError(f"{fn}: weight must have shape ({C},), one per class of "
                             f"logits {logits.shape}, got {weight.shape}")
    if isinstance(label_smoothing, (bool, np.bool_)) \
            or not isinstance(label_smoothing, numbers.Real) \
            or not 0 <= label_smoothing <= 1:
        raise ValueError(f"{fn}: label_smoothing must be a number in [0, 1], "
                         f"got {label_smoothing!r}")
    _check_reduction(reduction, fn)
    if not soft:
        target = target.astype(np.intp, copy=False)
    return logits, target, weight, float(label_smoothing), soft


def _soft_targets(logits, target, weight, eps):
    """Class-last (q * w) for probability targets: q smoothed as torch does,
    (1 - eps) q + eps / C, and weighted by class."""
    C = logits.shape[1]
    q = np.moveaxis(target, 1, -1)
    if eps:
        q = q * (1 - eps) + eps / C
    return q * weight if weight is not None else q


def _target_weights(target, weight, dtype):
    """w[t] per sample (ones without class weights)."""
    return np.ones(target.shape, dtype) if weight is None else weight[target]


def cross_entropy(logits, target, weight=None, label_smoothing=0.0, reduction="mean"):
    """Cross entropy between logits and integer class targets, as
    torch.nn.functional.cross_entropy.

    Per sample i with target t and log-probabilities logp = log_softmax(x):
        loss_i = (1 - eps) * w[t] * -logp[t] + eps / C * sum_c w[c] * -logp[c]
    (w = 1 without class weights, eps = label_smoothing). "mean" divides
    the sum by sum_i w[t_i], PyTorch's weighted mean (= N unweighted).
    With class-probability targets q (a float array of the logits' shape):
        loss_i = -sum_c w[c] * ((1 - eps) q_c + eps / C) * logp[c]
    and "mean" divides by the number of samples, as torch does.

    Parameters
    ----------
    logits : ndarray of shape (N, C) or (N, C, d1, ...), float32 or float64
    target : integer ndarray of shape (N,) or (N, d1, ...), values in [0, C);
        or class probabilities with the shape and dtype of logits
    weight : ndarray of shape (C,) or None, class weights
    label_smoothing : float in [0, 1]
    reduction : "mean", "sum" or "none"
    """
    fn = "cross_entropy"
    logits, target, weight, eps, soft = _ce_inputs(logits, target, weight,
                                                   label_smoothing, reduction, fn)
    C = logits.shape[1]
    logp = np.moveaxis(log_softmax(logits, axis=1), 1, -1)   # (N, ..., C)
    if soft:
        # torch: -sum_c w_c q_c logp_c per sample; "mean" over samples.
        loss = -(logp * _soft_targets(logits, target, weight, eps)).sum(axis=-1)
        return _reduce(loss.astype(logits.dtype, copy=False), reduction)
    w_t = _target_weights(target, weight, logits.dtype)
    picked = np.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
    loss = -(w_t * picked)
    if eps:
        smooth = -(logp * weight).sum(axis=-1) if weight is not None else -logp.sum(axis=-1)
        loss = (1 - eps) * loss + (eps / C) * smooth
    denominator = float(np.sum(w_t, dtype=np.float64)) if reduction == "mean" else None
    return _reduce(loss.astype(logits.dtype, copy=False), reduction, denominator)


def cross_entropy_backward(logits, target, weight=None, label_smoothing=0.0,
                           reduction="mean", grad=1.0):
    """Gradient of cross_entropy with respect to the logits (their shape):

        (1 - eps) * w[t] * (p - onehot(t)) + eps / C * (sum(w) * p - w)

    with p = softmax(logits), times grad (per sample for "none") and divided
    by sum_i w[t_i] for "mean"; for probability targets q (smoothed, times w)
    sum_c(q_c) * p - q, divided by the number of samples for "mean"."""
    fn = "cross_entropy_backward"
    logits, target, weight, eps, soft = _ce_inputs(logits, target, weight,
                                                   label_smoothing, reduction, fn)
    dtype = logits.dtype
    C = logits.shape[1]
    loss_shape = logits.shape[:1] + logits.shape[2:]
    up = _upstream(grad, reduction, loss_shape, dtype, fn)
    p = np.exp(np.moveaxis(log_softmax(logits, axis=1), 1, -1))   # (N, ..., C)
    if soft:
        # d/dz of -sum_c qw_c logp_c = sum(qw) p - qw
        qw = _soft_targets(logits, target, weight, eps)
        g = p * qw.sum(axis=-1, keepdims=True) - qw
        if reduction == "none":
            g *= up[..., None]
        elif reduction == "sum":
            g *= up
        else:  # "mean" over samples, whatever the weights
            samples = p.size // C
            g *= up / samples if samples else dtype.type(math.nan)
        return np.ascontiguousarray(np.moveaxis(g.astype(dtype, copy=False), -1, 1))
    w_t = _target_weights(target, weight, dtype)
    coef = (1 - eps) * w_t                                           # (N, ...)
    g = p * coef[..., None]
    idx = target[..., None]
    np.put_along_axis(g, idx, np.take_along_axis(g, idx, axis=-1) - coef[..., None], axis=-1)
    if eps:
        if weight is None:
            g += (eps / C) * (C * p - 1)
        else:
            g += (eps / C) * (weight.sum() * p - weight)
    if reduction == "none":
        g *= up[..., None]
    else:
        if reduction == "mean":
            total = float(np.sum(w_t, dtype=np.float64))
            up = up / total if total else dtype.type(math.nan)
        g *= up
    return np.ascontiguousarray(np.moveaxis(g.astype(dtype, copy=False), -1, 1))


# --- mean squared error ------------------------------------------------------------

def _mse_inputs(x, target, reduction, fn):
    x = as_float_array(x, "input", fn=fn)
    target = _same_shape(target, "target", x, fn)
    return x, target, _check_reduction(reduction, fn)


def mse_loss(input, target, reduction="mean"):  # noqa: A002 (torch's name)
    """(input - target)^2, reduced; shapes must be equal (no broadcasting)."""
    x, target, reduction = _mse_inputs(input, target, reduction, "mse_loss")
    d = x - target
    return _reduce(d * d, reduction)


def mse_loss_backward(input, target, reduction="mean", grad=1.0):  # noqa: A002
    """2 (input - target) * grad, divided by the element count for "mean"."""
    fn = "mse_loss_backward"
    x, target, reduction = _mse_inputs(input, target, reduction, fn)
    up = _upstream(grad, reduction, x.shape, x.dtype, fn)
    g = x - target
    g *= 2 * up
    if reduction == "mean":
        g /= x.dtype.type(x.size) if x.size else 1
    return g


# --- binary cross entropy with logits -----------------------------------------------

def _bce_inputs(logits, target, weight, pos_weight, reduction, fn):
    x = as_float_array(logits, "logits", fn=fn)
    target = _same_shape(target, "target", x, fn)
    out = []
    for name, a in (("weight", weight), ("pos_weight", pos_weight)):
        if a is not None:
            a = as_float_array(a, name, dtype=x.dtype, fn=fn)
            try:
                ok = np.broadcast_shapes(a.shape, x.shape) == x.shape
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{fn}: {name} of shape {a.shape} does not broadcast "
                                 f"to the logits shape {x.shape}")
        out.append(a)
    return x, target, out[0], out[1], _check_reduction(reduction, fn)


def _softplus_pair(x):
    """(log(1 + e^x), log(1 + e^-x)), without overflow for any x: both are
    max(+-x, 0) + log1p(e^-|x|)."""
    tail = np.log1p(np.exp(-np.abs(x)))
    return np.maximum(x, 0) + tail, np.maximum(-x, 0) + tail


def binary_cross_entropy_with_logits(logits, target, weight=None, pos_weight=None,
                                     reduction="mean"):
    """-w * [pos_weight * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x))],
    as torch.nn.functional.binary_cross_entropy_with_logits.

    Computed as w * [(1 - t) softplus(x) + pos_weight t softplus(-x)]: the
    same value as torch's (1 - t) x + (1 + (pos_weight - 1) t) softplus(-x),
    without its cancellation (x = -40, t = 0 gives 4.2e-18, not 0).

    logits, target : same shape and dtype (target in [0, 1], soft labels ok)
    weight : broadcastable to the logits shape, or None
    pos_weight : broadcastable to the logits shape (typically (C,)), or None
    """
    fn = "binary_cross_entropy_with_logits"
    x, t, w, pw, reduction = _bce_inputs(logits, target, weight, pos_weight, reduction, fn)
    sp_pos, sp_neg = _softplus_pair(x)    # -log(1 - sigmoid(x)), -log(sigmoid(x))
    pos_term = t * sp_neg if pw is None else pw * t * sp_neg
    loss = (1 - t) * sp_pos + pos_term
    if w is not None:
        loss = loss * w
    return _reduce(loss.astype(x.dtype, copy=False), reduction)


def binary_cross_entropy_with_logits_backward(logits, target, weight=None,
                                              pos_weight=None, reduction="mean",
                                              grad=1.0):
    """Gradient with respect to the logits:
    w * ((1 - t) sigmoid(x) - pos_weight t sigmoid(-x)) * grad
    (= w * (sigmoid(x) - t) without pos_weight), / numel for "mean"."""
    fn = "binary_cross_entropy_with_logits_backward"
    x, t, w, pw, reduction = _bce_inputs(logits, target, weight, pos_weight, reduction, fn)
    up = _upstream(grad, reduction, x.shape, x.dtype, fn)
    pos_term = t * sigmoid(-x) if pw is None else pw * t * sigmoid(-x)
    g = (1 - t) * sigmoid(x) - pos_term
    if w is not None:
        g = g * w
    g = g * up
    if reduction == "mean" and x.size:
        g /= x.dtype.type(x.size)
    return g.astype(x.dtype, copy=False)
