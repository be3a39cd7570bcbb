"""No leaks: 10,000 forward+backward rounds of conv (every algorithm),
pooling and batch norm, plus refused calls, keep the resident set flat."""
import gc
import os

import numpy as np
import pytest

import convcore.functional as F

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _round(i, x, w, gy_shape):
    algo = ("direct", "im2col", "winograd")[i % 3]
    y = F.conv2d(x, w, padding=1, algorithm=algo)
    F.conv2d_backward(y, x, w, padding=1, algorithm=algo)
    p, idx = F.max_pool2d(y, 2, return_indices=True)
    F.max_pool2d_backward(p, idx, y.shape)
    F.avg_pool2d_backward(F.avg_pool2d(y, 2), y.shape, 2)
    b, mean, invstd = F.batch_norm(y, None, None, training=True, return_stats=True)
    F.batch_norm_backward(b, y, mean, invstd)
    try:  # the refusal paths must not leak either
        F.conv2d(x, w[:, :1])
    except ValueError:
        pass


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's quarantine holds freed memory")
def test_ten_thousand_rounds_keep_rss_flat():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8))           # float64: 4 KB per activation
    w = rng.standard_normal((4, 4, 3, 3))
    for i in range(500):                            # warm-up: caches, pools, arenas
        _round(i, x, w, None)
    gc.collect()
    before = _rss()
    for i in range(10_000):
        _round(i, x, w, None)
    gc.collect()
    after = _rss()
    # One leaked activation per round would be 40 MB here.
    assert after < before * 1.05, f"RSS grew from {before} to {after} bytes"
