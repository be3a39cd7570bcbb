"""What one parallel region costs under each OpenMP wait policy.

A kernel call on 2 threads wakes the pool's second thread; asleep
(OMP_WAIT_POLICY=PASSIVE, which convcore sets at import unless the user
chose, or libgomp's short spin once convcore parks a pool), the wake-up
costs what the operating system takes to run a sleeping thread again, a
few microseconds on bare metal and tens in some virtual machines. This
times convcore's ReLU on 1 and 2 threads at sizes around the grain (the
smallest call convcore shares out), each policy in a fresh process:

    python benchmarks/parallel_regions.py [--repeats N]

The 2-thread time minus half the 1-thread time estimates the region's
fixed cost. Results: benchmarks/results/spin_waits.md.
"""
import argparse
import os
import subprocess
import sys

POLICIES = {
    "convcore default (PASSIVE)": {},
    "GOMP_SPINCOUNT=3000, no park": {"GOMP_SPINCOUNT": "3000", "CONVCORE_OMP_THROTTLE": "0"},
    "OMP_WAIT_POLICY=ACTIVE, no park": {"OMP_WAIT_POLICY": "ACTIVE",
                                        "CONVCORE_OMP_THROTTLE": "0"},
}
SIZES = (1 << 17, 1 << 19, 1 << 21)

CHILD = r"""
import sys, time
import numpy as np
import convcore
from convcore.functional import relu
repeats = int(sys.argv[1])
for n in map(int, sys.argv[2:]):
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    us = []
    for threads in (1, 2):
        convcore.set_num_threads(threads)
        relu(x)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            relu(x)
            ts.append(time.perf_counter() - t0)
        us.append(float(np.median(ts)) * 1e6)
    print(n, us[0], us[1])
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2000,
                        help="calls timed per size and thread count (median kept)")
    args = parser.parse_args(argv)
    print("| policy | elements | 1 thread us | 2 threads us | region cost us |")
    print("|---|---:|---:|---:|---:|")
    for name, extra in POLICIES.items():
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "CONVCORE_OMP_THROTTLE")}
        env.update(extra)
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.repeats)]
                             + [str(n) for n in SIZES], env=env, capture_output=True,
                             text=True, check=True).stdout
        for line in out.split("\n"):
            if line.strip():
                n, one, two = line.split()
                one, two = float(one), float(two)
                print(f"| {name} | {n} | {one:.1f} | {two:.1f} | {two - one / 2:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
