"""Helpers for the nn tests: a finite-difference check of a whole module
(layer or network) in float64 along random directions (see gradcheck.py),
and a fixture holding the kernels to one thread."""
import sys

import pytest

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


@pytest.fixture
def one_kernel_thread():
    """These tests run thousands of kernel calls on tiny arrays. On a loaded
    machine each OpenMP region then waits for a descheduled thread and a
    test slows 10-20x, so they run single-threaded (torch too, for the
    peer checks); threading itself is covered by the kernels' own tests."""
    torch = sys.modules.get("torch")
    previous = convcore.set_num_threads(1)
    torch_previous = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        convcore.set_num_threads(previous)
        if torch:
            torch.set_num_threads(torch_previous)
