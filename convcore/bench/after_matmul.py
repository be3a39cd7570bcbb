"""Does a user's numpy matmul slow convcore's next call? The measurement
behind benchmarks/blas_pools.py and its test (tests/runtime/test_blas_pools.py).

A big enough numpy matmul runs on OpenBLAS's threads, whose workers then
spin for a while; convcore stops that pool at its next kernel call
(convcore._runtime.blas_pools). This times a call of convcore plainly and
right after such a matmul, each after the same busy pause, alternating.
"""
import time

import numpy as np


def busy_pause(seconds):
    """Wait busily, so that the cores do not idle down before a call."""
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        pass


def times_after_matmul(call, rounds=9, pause=0.3, size=256, seed=1):
    """{"plain": s, "after_matmul": s}: the median seconds of `call()` after
    a busy `pause`, without and with a size x size float32 numpy matmul
    just before it; `rounds` calls of each, alternating."""
    a = np.random.default_rng(seed).standard_normal((size, size)).astype(np.float32)
    times = {"plain": [], "after_matmul": []}
    for _ in range(rounds):
        for kind, samples in times.items():
            busy_pause(pause)
            if kind == "after_matmul":
                a @ a
            t = time.perf_counter()
            call()
            samples.append(time.perf_counter() - t)
    return {kind: float(np.median(samples)) for kind, samples in times.items()}
