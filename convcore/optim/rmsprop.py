"""RMSprop with momentum and the centered variant (torch.optim.RMSprop)."""
from __future__ import annotations

import numpy as np

from convcore.optim.optimizer import Optimizer, Params


class RMSprop(Optimizer):
    """For each parameter p with gradient g (torch's update):

        g = g + weight_decay * p
        sq = alpha * sq + (1 - alpha) * g^2
        avg = sqrt(sq - gavg^2) + eps, gavg = alpha * gavg + (1 - alpha) * g  (centered)
        avg = sqrt(sq) + eps                                                  (otherwise)
        buf = momentum * buf + g / avg; p = p - lr * buf    (momentum > 0)
        p = p - lr * g / avg                                (otherwise)
    """

    def __init__(self, params: Params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False) -> None:
        if not 0.0 <= alpha:
            raise ValueError(f"RMSprop: invalid alpha {alpha}")
        if momentum < 0 or eps < 0:
            raise ValueError(f"RMSprop: invalid momentum {momentum} or eps {eps}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def step(self) -> None:
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            wd, mom, centered = group["weight_decay"], group["momentum"], group["centered"]
            for p, state in self._params_with_grad(group):
                g = p.grad
                if not state:
                    state["step"] = 0
                    state["square_avg"] = np.zeros_like(p.data)
                    if mom > 0:
                        state["momentum_buffer"] = np.zeros_like(p.data)
                    if centered:
                        state["grad_avg"] = np.zeros_like(p.data)
                state["step"] += 1
                if wd:
                    g = g + wd * p.data
                sq = state["square_avg"]
                sq *= alpha
                sq += (1 - alpha) * (g * g)
                if centered:
                    ga = state["grad_avg"]
                    ga *= alpha
                    ga += (1 - alpha) * g
                    avg = np.sqrt(sq - ga * ga) + eps
                else:
                    avg = np.sqrt(sq) + eps
                if mom > 0:
                    buf = state["momentum_buffer"]
                    buf *= mom
                    buf += g / avg
                    p.data -= lr * buf
                else:
                    p.data -= lr * (g / avg)
