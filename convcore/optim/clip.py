"""Gradient clipping (torch.nn.utils.clip_grad_norm_ / clip_grad_value_)."""
from __future__ import annotations

import math
from typing import Iterable, Union

import numpy as np

from convcore.nn.parameter import Parameter

Parameters = Union[Parameter, Iterable[Parameter]]


def _grads(parameters: Parameters) -> list:
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters: Parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale all gradients together so that their joint norm is at most
    max_norm (factor max_norm / (norm + 1e-6), as torch). Returns the
    norm before clipping."""
    grads = _grads(parameters)
    if not grads:
        return 0.0
    norm_type = float(norm_type)
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    else:
        total = sum(float(np.sum(np.abs(g.astype(np.float64)) ** norm_type)) for g in grads)
        total = total ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} is "
                           f"{total}; gradients are not finite")
    coef = float(max_norm) / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= coef
    return total


def clip_grad_value_(parameters: Parameters, clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value]."""
    c = float(clip_value)
    for g in _grads(parameters):
        np.clip(g, -c, c, out=g)
