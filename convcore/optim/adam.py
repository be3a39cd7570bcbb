"""Adam (optionally AMSGrad) and AdamW (torch.optim.Adam / AdamW)."""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from convcore._kernels import optim as _kernels
from convcore.optim.optimizer import Optimizer, Params, one_pass


class Adam(Optimizer):
    """For each parameter p with gradient g, at step t (torch's update):

        g = g + weight_decay * p            (Adam; AdamW decays p instead)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2     (AMSGrad: vmax = max(vmax, v))
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    _decoupled = False

    def __init__(self, params: Params, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False) -> None:
        name = type(self).__name__
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"{name}: betas must be in [0, 1), got {betas}")
        if eps < 0:
            raise ValueError(f"{name}: invalid eps {eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    def step(self) -> None:
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            wd, amsgrad = group["weight_decay"], group["amsgrad"]
            for p, state in self._params_with_grad(group):
                g = p.grad
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = np.zeros_like(p.data)
                    state["exp_avg_sq"] = np.zeros_like(p.data)
                    if amsgrad:
                        state["max_exp_avg_sq"] = np.zeros_like(p.data)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                step_size, root = lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t)
                views = (one_pass(p, m, v, state["max_exp_avg_sq"]) if amsgrad
                         else one_pass(p, m, v))
                if views is not None:
                    vmax = views[5] if amsgrad else views[1][:0]
                    _kernels.adam(views[1], views[2], views[3], views[4], vmax, lr, b1, b2,
                                  eps, wd, self._decoupled, step_size, root, views[0])
                    continue
                if wd:
                    if self._decoupled:
                        p.data *= 1 - lr * wd
                    else:
                        g = g + wd * p.data
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * (g * g)
                if amsgrad:
                    np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                    v = state["max_exp_avg_sq"]
                denom = np.sqrt(v) / root + eps
                p.data -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay: p = p * (1 - lr * weight_decay)
    before the Adam update (torch.optim.AdamW, default weight_decay 0.01)."""

    _decoupled = True

    def __init__(self, params: Params, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
