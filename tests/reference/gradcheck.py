"""Finite-difference gradient checks shared by the tests (float64 only).

Along a random direction v, the analytic directional derivative
<grad_f(x), v> must match (f(x + h v) - f(x - h v)) / 2h, where f is the
loss <forward(x), upstream> for a fixed random upstream gradient. One
direction per input checks every component at once with two forward calls
(Chainer's check_backward), and a few elementwise probes make a wrong
single entry visible too."""
import numpy as np


def directional_check(forward, args, grads, upstream, rng, eps=1e-6,
                      rtol=1e-6, atol=1e-8, probes=4):
    """forward(*args) -> y; grads[i] is the analytic gradient of
    sum(y * upstream) with respect to args[i] (None to skip that arg)."""
    def loss(*a):
        return float(np.sum(forward(*a) * upstream))

    for i, g in enumerate(grads):
        if g is None:
            continue
        x = args[i]
        assert g.shape == x.shape, (i, g.shape, x.shape)
        directions = [rng.standard_normal(x.shape)]
        flat_idx = rng.choice(x.size, size=min(probes, x.size), replace=False)
        for j in flat_idx:
            e = np.zeros(x.size)
            e[j] = 1.0
            directions.append(e.reshape(x.shape))
        for v in directions:
            plus = list(args)
            minus = list(args)
            plus[i] = x + eps * v
            minus[i] = x - eps * v
            numeric = (loss(*plus) - loss(*minus)) / (2 * eps)
            analytic = float(np.sum(g * v))
            assert np.isclose(analytic, numeric, rtol=rtol, atol=atol), (
                f"argument {i}: analytic {analytic!r} vs numeric {numeric!r}")


def check_conv2d_gradients(x, w, b, geom, algorithm, rng):
    """directional_check of conv2d_backward against conv2d through one
    algorithm (geom: conv2d's keyword arguments)."""
    from convcore import F

    def forward(x, w, b):
        return F.conv2d(x, w, b, algorithm=algorithm, **geom)

    upstream = rng.standard_normal(forward(x, w, b).shape)
    grads = F.conv2d_backward(upstream, x, w, algorithm=algorithm, **geom)
    directional_check(forward, (x, w, b), grads, upstream, rng)
