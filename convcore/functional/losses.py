"""Losses and their gradients, as torch.nn.functional: cross_entropy
(class weights, label smoothing, ignore_index), nll_loss, mse_loss,
l1_loss, smooth_l1_loss, huber_loss and binary_cross_entropy_with_logits
(weight, pos_weight).

reduction "mean" and "sum" return a Python float (summed in float64);
"none" returns the per-element losses in the input's dtype. Each
*_backward takes the forward's arguments plus `grad`, the upstream
gradient of the loss (a number, or an array of the per-element loss shape
for reduction="none"), and returns the gradient with respect to the
logits/input in its dtype.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import numpy as np

from convcore.utils.validation import as_float_array
from convcore.functional.activations import log_softmax, sigmoid
from convcore.utils.types import Array, LossValue

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


# --- cross entropy, nll loss ----------------------------------------------------

def _class_inputs(scores, target, weight, ignore_index, reduction, fn, name="logits",
                  allow_soft=True):
    """Checked (scores, target, weight, soft) of a loss over classes (the
    logits of cross_entropy, the log-probabilities of nll_loss): target is
    either integer class indices (N, d1, ...), each in [0, C) or equal to
    ignore_index, or, when allow_soft and it is a float array of the
    scores' shape, class probabilities (soft=True), as in torch."""
    scores = as_float_array(scores, name, fn=fn)
    if scores.ndim < 2:
        raise ValueError(f"{fn}: {name} must be (N, C) or (N, C, d1, ...), got shape "
                         f"{scores.shape}")
    C = scores.shape[1]
    if not isinstance(target, np.ndarray):
        raise TypeError(f"{fn}: target must be a numpy.ndarray of class indices, "
                        f"got {type(target).__name__}")
    soft = allow_soft and target.dtype.kind == "f" and target.shape == scores.shape
    if soft:
        target = as_float_array(target, "target", dtype=scores.dtype, fn=fn)
    elif not np.issubdtype(target.dtype, np.integer):
        also = (f"; float targets are class probabilities only with the {name}' shape "
                f"{scores.shape}") if allow_soft else ""
        raise TypeError(f"{fn}: target must hold integer class indices, got dtype "
                        f"{target.dtype} (shape {target.shape}){also}")
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index,
                                                                    numbers.Integral):
        raise TypeError(f"{fn}: ignore_index must be an int, got {ignore_index!r}")
    expected = scores.shape[:1] + scores.shape[2:]
    if not soft and target.shape != expected:
        raise ValueError(f"{fn}: target has shape {target.shape} but {name} of shape "
                         f"{scores.shape} need target shape {expected}")
    if not soft and target.size:
        classes = target[target != ignore_index]
        if classes.size and (classes.min() < 0 or classes.max() >= C):
            raise ValueError(f"{fn}: target values must be class indices in [0, {C}) "
                             f"for {name} of shape {scores.shape}, found values in "
                             f"[{classes.min()}, {classes.max()}] (besides "
                             f"ignore_index={ignore_index})")
    if weight is not None:
        weight = as_float_array(weight, "weight", ndim=1, dtype=scores.dtype, fn=fn)
        if weight.shape != (C,):
            raise ValueError(f"{fn}: weight must have shape ({C},), one per class of "
                             f"{name} {scores.shape}, got {weight.shape}")
    _check_reduction(reduction, fn)
    if not soft:
        target = target.astype(np.intp, copy=False)
    return scores, target, weight, soft


def _ce_inputs(logits, target, weight, label_smoothing, reduction, ignore_index, fn):
    """_class_inputs of cross_entropy, plus its label_smoothing:
    (logits, target, weight, label_smoothing, soft)."""
    logits, target, weight, soft = _class_inputs(logits, target, weight, ignore_index,
                                                 reduction, fn)
    if isinstance(label_smoothing, (bool, np.bool_)) \
            or not isinstance(label_smoothing, numbers.Real) \
            or not 0 <= label_smoothing <= 1:
        raise ValueError(f"{fn}: label_smoothing must be a number in [0, 1], "
                         f"got {label_smoothing!r}")
    return logits, target, weight, float(label_smoothing), soft


def _soft_targets(logits, target, weight, eps):
    """Class-last (q * w) for probability targets: q smoothed as torch does,
    (1 - eps) q + eps / C, and weighted by class."""
    C = logits.shape[1]
    q = np.moveaxis(target, 1, -1)
    if eps:
        q = q * (1 - eps) + eps / C
    return q * weight if weight is not None else q


class _Picked:
    """The per-sample part of a loss over class indices: kept (target is
    not ignore_index), index (the target, 0 where ignored, safe to index
    with) and w_t (the class weight of the target, 0 where ignored)."""

    def __init__(self, target, weight, ignore_index, dtype):
        self.kept = target != ignore_index
        self.index = np.where(self.kept, target, 0)
        w_t = self.kept.astype(dtype)
        if weight is not None:
            w_t *= weight[self.index]
        self.w_t = w_t

    def total_weight(self):
        """sum_i w[t_i] over kept samples: torch's "mean" denominator."""
        return float(np.sum(self.w_t, dtype=np.float64))

    def nll(self, logp):
        """-w[t] logp[t] per sample, from class-last log-probabilities."""
        picked = np.take_along_axis(logp, self.index[..., None], axis=-1)[..., 0]
        return -(self.w_t * picked)

    def nll_grad(self, shape, dtype):
        """Class-last gradient of sum_i nll_i with respect to logp: -w[t] at t."""
        g = np.zeros(shape, dtype)
        np.put_along_axis(g, self.index[..., None], -self.w_t[..., None], axis=-1)
        return g


def _divide(total, denominator):
    """A "mean": nan for an empty batch or zero total weight, as torch."""
    return total / denominator if denominator else math.nan


def cross_entropy(logits: Array, target: Array, weight: Optional[Array] = None,
                  label_smoothing: float = 0.0, reduction: str = "mean",
                  ignore_index: int = -100) -> LossValue:
    """Cross entropy between logits and integer class targets, as
    torch.nn.functional.cross_entropy.

    Per sample i with target t and log-probabilities logp = log_softmax(x):
        loss_i = (1 - eps) * w[t] * -logp[t] + eps / C * sum_c w[c] * -logp[c]
    (w = 1 without class weights, eps = label_smoothing), and 0 for a
    sample whose target is ignore_index. "mean" divides the sum by
    sum_i w[t_i] over the samples not ignored, PyTorch's weighted mean
    (= their count unweighted).
    With class-probability targets q (a float array of the logits' shape):
        loss_i = -sum_c w[c] * ((1 - eps) q_c + eps / C) * logp[c]
    and "mean" divides by the number of samples, as torch does
    (ignore_index does not apply).

    Parameters
    ----------
    logits : ndarray of shape (N, C) or (N, C, d1, ...), float32 or float64
    target : integer ndarray of shape (N,) or (N, d1, ...), values in [0, C)
        or ignore_index; or class probabilities with the shape and dtype of
        logits
    weight : ndarray of shape (C,) or None, class weights
    label_smoothing : float in [0, 1]
    reduction : "mean", "sum" or "none"
    ignore_index : int, a target value that contributes nothing
    """
    fn = "cross_entropy"
    logits, target, weight, eps, soft = _ce_inputs(logits, target, weight, label_smoothing,
                                                   reduction, ignore_index, fn)
    C = logits.shape[1]
    logp = np.moveaxis(log_softmax(logits, axis=1), 1, -1)   # (N, ..., C)
    if soft:
        # torch: -sum_c w_c q_c logp_c per sample; "mean" over samples.
        loss = -(logp * _soft_targets(logits, target, weight, eps)).sum(axis=-1)
        return _reduce(loss.astype(logits.dtype, copy=False), reduction)
    picked = _Picked(target, weight, ignore_index, logits.dtype)
    loss = picked.nll(logp)
    if eps:
        smooth = -(logp * weight).sum(axis=-1) if weight is not None else -logp.sum(axis=-1)
        loss = (1 - eps) * loss + (eps / C) * (smooth * picked.kept)
    return _reduce(loss.astype(logits.dtype, copy=False), reduction, picked.total_weight())


def cross_entropy_backward(logits: Array, target: Array, weight: Optional[Array] = None,
                           label_smoothing: float = 0.0, reduction: str = "mean",
                           grad: Union[float, Array] = 1.0, ignore_index: int = -100) -> Array:
    """Gradient of cross_entropy with respect to the logits (their shape):

        (1 - eps) * w[t] * (p - onehot(t)) + eps / C * (sum(w) * p - w)

    with p = softmax(logits), 0 for ignored samples, times grad (per sample
    for "none") and divided by sum_i w[t_i] over the samples not ignored
    for "mean". For probability targets q (smoothed, times w)
    sum_c(q_c) * p - q, divided by the number of samples for "mean"."""
    fn = "cross_entropy_backward"
    logits, target, weight, eps, soft = _ce_inputs(logits, target, weight, label_smoothing,
                                                   reduction, ignore_index, fn)
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
        return _class_first(g, dtype)
    picked = _Picked(target, weight, ignore_index, dtype)
    # d nll_i / dz = w[t] p - w[t] onehot(t): the log_softmax chain rule
    g = p * picked.w_t[..., None] + picked.nll_grad(p.shape, dtype)
    if eps:
        g *= 1 - eps
        smooth = C * p - 1 if weight is None else weight.sum() * p - weight
        g += smooth * ((eps / C) * picked.kept[..., None])
    return _class_first(_scaled(g, up, reduction, picked), dtype)


def _scaled(g, up, reduction, picked):
    """A class-last gradient of summed per-sample losses times the upstream
    grad, divided by the kept target weight for "mean"."""
    if reduction == "none":
        g *= up[..., None]
    else:
        g *= g.dtype.type(_divide(up, picked.total_weight()) if reduction == "mean" else up)
    return g


def _class_first(g, dtype):
    """A class-last gradient back in the (N, C, ...) layout of the scores."""
    return np.ascontiguousarray(np.moveaxis(g.astype(dtype, copy=False), -1, 1))


def nll_loss(input: Array, target: Array,  # noqa: A002 (torch's name)
             weight: Optional[Array] = None, ignore_index: int = -100,
             reduction: str = "mean") -> LossValue:
    """Negative log-likelihood of log-probabilities, as
    torch.nn.functional.nll_loss: per sample -w[t] * input[t] (0 where the
    target is ignore_index); "mean" divides by sum_i w[t_i] over the
    samples not ignored.

    Parameters
    ----------
    input : ndarray of shape (N, C) or (N, C, d1, ...), log-probabilities
    target : integer ndarray of shape (N,) or (N, d1, ...), values in
        [0, C) or ignore_index
    weight : ndarray of shape (C,) or None, class weights
    ignore_index : int; reduction : "mean", "sum" or "none"
    """
    fn = "nll_loss"
    logp, target, weight, _ = _class_inputs(input, target, weight, ignore_index, reduction,
                                            fn, name="input", allow_soft=False)
    picked = _Picked(target, weight, ignore_index, logp.dtype)
    loss = picked.nll(np.moveaxis(logp, 1, -1))
    return _reduce(loss, reduction, picked.total_weight())


def nll_loss_backward(input: Array, target: Array, weight: Optional[Array] = None,  # noqa: A002
                      ignore_index: int = -100, reduction: str = "mean",
                      grad: Union[float, Array] = 1.0) -> Array:
    """Gradient of nll_loss with respect to its input: -w[t] * grad at
    the target class (0 elsewhere and for ignored samples), divided by
    sum_i w[t_i] for "mean"."""
    fn = "nll_loss_backward"
    logp, target, weight, _ = _class_inputs(input, target, weight, ignore_index, reduction,
                                            fn, name="input", allow_soft=False)
    dtype = logp.dtype
    up = _upstream(grad, reduction, target.shape, dtype, fn)
    picked = _Picked(target, weight, ignore_index, dtype)
    g = picked.nll_grad(target.shape + logp.shape[1:2], dtype)
    return _class_first(_scaled(g, up, reduction, picked), dtype)


# --- pointwise regression losses: mse, l1, smooth l1, huber --------------------------

def _mse_inputs(x, target, reduction, fn):
    x = as_float_array(x, "input", fn=fn)
    target = _same_shape(target, "target", x, fn)
    return x, target, _check_reduction(reduction, fn)


def _pointwise(loss_of_difference, input, target, reduction, fn):  # noqa: A002
    """A loss of d = input - target elementwise, reduced (no broadcasting)."""
    x, target, reduction = _mse_inputs(input, target, reduction, fn)
    return _reduce(loss_of_difference(x - target), reduction)


def _pointwise_backward(derivative, input, target, reduction, grad, fn):  # noqa: A002
    """derivative(d) * grad, divided by the element count for "mean"."""
    x, target, reduction = _mse_inputs(input, target, reduction, fn)
    up = _upstream(grad, reduction, x.shape, x.dtype, fn)
    g = derivative(x - target)
    g *= up
    if reduction == "mean":
        g /= x.dtype.type(x.size) if x.size else 1
    return g


def _positive(v, name, fn, allow_zero=False):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) \
            or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{fn}: {name} must be a finite number {need}, got {v!r}")
    return float(v)


def mse_loss(input: Array, target: Array,  # noqa: A002 (torch's name)
             reduction: str = "mean") -> LossValue:
    """(input - target)^2, reduced; shapes must be equal (no broadcasting)."""
    return _pointwise(lambda d: d * d, input, target, reduction, "mse_loss")


def mse_loss_backward(input: Array, target: Array, reduction: str = "mean",  # noqa: A002
                      grad: Union[float, Array] = 1.0) -> Array:
    """2 (input - target) * grad, divided by the element count for "mean"."""
    return _pointwise_backward(lambda d: 2 * d, input, target, reduction, grad,
                               "mse_loss_backward")


def l1_loss(input: Array, target: Array,  # noqa: A002
            reduction: str = "mean") -> LossValue:
    """|input - target|, reduced, as torch.nn.functional.l1_loss."""
    return _pointwise(np.abs, input, target, reduction, "l1_loss")


def l1_loss_backward(input: Array, target: Array, reduction: str = "mean",  # noqa: A002
                     grad: Union[float, Array] = 1.0) -> Array:
    """sign(input - target) * grad (0 where they are equal, as torch)."""
    return _pointwise_backward(np.sign, input, target, reduction, grad, "l1_loss_backward")


def _smooth_l1(d, beta):
    """0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (l1 for beta 0)."""
    a = np.abs(d)
    if beta == 0:
        return a
    return np.where(a < beta, d * d * d.dtype.type(0.5 / beta), a - d.dtype.type(0.5 * beta))


def smooth_l1_loss(input: Array, target: Array, reduction: str = "mean",  # noqa: A002
                   beta: float = 1.0) -> LossValue:
    """Smooth L1 (quadratic below beta, linear above), as
    torch.nn.functional.smooth_l1_loss; beta >= 0, 0 gives l1_loss."""
    fn = "smooth_l1_loss"
    beta = _positive(beta, "beta", fn, allow_zero=True)
    return _pointwise(lambda d: _smooth_l1(d, beta), input, target, reduction, fn)


def smooth_l1_loss_backward(input: Array, target: Array,  # noqa: A002
                            reduction: str = "mean", beta: float = 1.0,
                            grad: Union[float, Array] = 1.0) -> Array:
    """clip(d / beta, -1, 1) * grad (sign(d) for beta 0), d = input - target."""
    fn = "smooth_l1_loss_backward"
    beta = _positive(beta, "beta", fn, allow_zero=True)
    if beta == 0:
        return _pointwise_backward(np.sign, input, target, reduction, grad, fn)
    return _pointwise_backward(lambda d: np.clip(d / d.dtype.type(beta), -1, 1),
                               input, target, reduction, grad, fn)


def huber_loss(input: Array, target: Array, reduction: str = "mean",  # noqa: A002
               delta: float = 1.0) -> LossValue:
    """0.5 d^2 where |d| < delta, delta (|d| - 0.5 delta) elsewhere, as
    torch.nn.functional.huber_loss: delta * smooth_l1 with beta = delta."""
    fn = "huber_loss"
    delta = _positive(delta, "delta", fn)
    return _pointwise(lambda d: d.dtype.type(delta) * _smooth_l1(d, delta), input, target,
                      reduction, fn)


def huber_loss_backward(input: Array, target: Array,  # noqa: A002
                        reduction: str = "mean", delta: float = 1.0,
                        grad: Union[float, Array] = 1.0) -> Array:
    """clip(d, -delta, delta) * grad, d = input - target."""
    fn = "huber_loss_backward"
    delta = _positive(delta, "delta", fn)
    return _pointwise_backward(lambda d: np.clip(d, -delta, delta).astype(d.dtype, copy=False),
                               input, target, reduction, grad, fn)


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


def binary_cross_entropy_with_logits(logits: Array, target: Array, weight: Optional[Array] = None,
                                     pos_weight: Optional[Array] = None,
                                     reduction: str = "mean") -> LossValue:
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


def binary_cross_entropy_with_logits_backward(logits: Array, target: Array,
                                              weight: Optional[Array] = None,
                                              pos_weight: Optional[Array] = None,
                                              reduction: str = "mean",
                                              grad: Union[float, Array] = 1.0) -> Array:
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
