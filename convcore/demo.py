"""A short convolution demo: `python -m convcore.demo`.

Runs one conv layer forward and backward with every algorithm, checks they
agree, and prints the time and GFLOP/s of each."""
import time

import numpy as np

import convcore


def main():
    F = convcore.F
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 64, 32, 32), dtype=np.float32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32) * 0.05
    flops = 2 * 32 * 64 * 32 * 32 * 64 * 9
    print(f"conv 3x3 64->64 on 32x{64}x32x32 float32, {convcore.get_num_threads()} threads")
    ref = None
    for algo in [a for a in convcore.conv_algorithms() if a != "auto"]:
        F.conv2d(x, w, padding=1, algorithm=algo)  # warm-up
        t0 = time.perf_counter()
        y = F.conv2d(x, w, padding=1, algorithm=algo)
        t1 = time.perf_counter()
        F.conv2d_backward(y, x, w, padding=1, algorithm=algo)
        t2 = time.perf_counter()
        ref = y if ref is None else ref
        err = float(np.max(np.abs(y - ref)) / np.max(np.abs(ref)))
        print(f"  {algo:8s} forward {1e3 * (t1 - t0):7.1f} ms ({flops / (t1 - t0) / 1e9:6.1f} GFLOP/s)"
              f"  backward {1e3 * (t2 - t1):7.1f} ms  max rel. diff {err:.1e}")


if __name__ == "__main__":
    main()
