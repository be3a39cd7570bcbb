"""Finite-difference check of a whole module (layer or network) in float64:
the input gradient its backward returns and the gradients it adds into
its parameters, along random directions (see gradcheck.py)."""
import numpy as np

import convcore
from gradcheck import directional_check


def check_module_gradients(module, x, rng, eps=1e-6, rtol=1e-6, atol=1e-8,
                           check_input=True):
    """Run forward + backward once, then compare every gradient with
    finite differences of sum(module(x) * upstream)."""
    module.zero_grad()
    y = module(x)
    upstream = rng.standard_normal(y.shape)
    gx = module.backward(upstream)
    params = [p for p in module.parameters() if p.requires_grad]
    originals = [p.data for p in params]
    grads = [gx if check_input else None] + [p.grad for p in params]
    assert all(g is not None for g in grads[1:]), "a trainable parameter got no gradient"

    def forward(xv, *values):
        for p, v in zip(params, values):
            p.data = v
        try:
            with convcore.no_grad():
                return module(xv)
        finally:
            for p, o in zip(params, originals):
                p.data = o

    directional_check(forward, [x] + originals, grads, upstream, rng,
                      eps=eps, rtol=rtol, atol=atol)
    return y, gx
