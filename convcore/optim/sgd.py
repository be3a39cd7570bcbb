"""SGD with momentum, dampening, Nesterov and weight decay (torch.optim.SGD)."""
from __future__ import annotations

import numpy as np

from convcore._kernels import optim as _kernels
from convcore.optim.optimizer import Optimizer, Params, one_pass


class SGD(Optimizer):
    """For each parameter p with gradient g (torch's update):

        g = g + weight_decay * p
        buf = g                                   (first step)
        buf = momentum * buf + (1 - dampening) * g  (later steps)
        g = g + momentum * buf if nesterov else buf (when momentum != 0)
        p = p - lr * g
    """

    def __init__(self, params: Params, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        if momentum < 0:
            raise ValueError(f"SGD: invalid momentum {momentum}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def step(self) -> None:
        for group in self.param_groups:
            lr, mom, damp = group["lr"], group["momentum"], group["dampening"]
            wd, nesterov = group["weight_decay"], group["nesterov"]
            for p, state in self._params_with_grad(group):
                if self._one_pass(p, state, lr, mom, damp, wd, nesterov):
                    continue
                g = p.grad
                if wd:
                    g = g + wd * p.data
                if mom:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = np.array(g, copy=True)
                    else:
                        buf *= mom
                        buf += (1 - damp) * g
                    g = g + mom * buf if nesterov else buf
                p.data -= lr * g

    @staticmethod
    def _one_pass(p, state, lr, mom, damp, wd, nesterov):
        """The step's update of p by the one-pass kernel; False when it
        cannot take p's arrays (step() then runs the expressions above)."""
        buf = state.get("momentum_buffer") if mom else None
        first = mom and buf is None
        if first:
            buf = np.empty_like(p.data)
        views = one_pass(p) if buf is None else one_pass(p, buf)
        if views is None:
            return False
        threads, data, grad = views[:3]
        _kernels.sgd(data, grad, views[3] if mom else data[:0], lr, mom, damp, wd,
                     nesterov, first, threads)
        if first:
            state["momentum_buffer"] = buf
        return True
