"""Single-thread GEMM speed of the two OpenBLAS copies in a convcore process.

    python benchmarks/blas_backends.py [--markdown benchmarks/results/blas.md]

scipy's (scipy.linalg.cython_blas, the supported nogil path) and numpy's
bundled one, each called through convcore's own row-major entry point
(blas.gemm_py on one thread, which is what every kernel GEMM is), at the
GEMM shapes of common convolution layers: (K/groups) x (output pixels) x
(C/groups * R * S). Best of the repeats (the ceiling), interleaved. The
kernels use the newer copy (convcore._runtime.blas_backend); this shows why.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import convcore  # noqa: F401
from convcore._runtime import blas_backend as _blas_backend
from convcore._kernels import blas

SHAPES = [  # (m, n, k, layer)
    (64, 3136, 576, "ResNet 3x3 64->64 at 56x56"),
    (128, 784, 1152, "ResNet 3x3 128->128 at 28x28"),
    (256, 196, 2304, "ResNet 3x3 256->256 at 14x14"),
    (512, 49, 4608, "ResNet 3x3 512->512 at 7x7"),
    (64, 12544, 147, "ResNet stem 7x7 s2"),
    (256, 3136, 64, "ResNet-50 1x1 64->256"),
    (64, 1024, 576, "3x3 64->64 at 32x32"),
    (16, 1024, 144, "ResNet-20 3x3 16->16"),
    (1000, 16, 512, "classifier 512->1000, batch 16 (as x W^T)"),
]


def measure(repeats):
    rng = np.random.default_rng(0)
    gemms = blas.gemm_py["float"]
    rows = []
    ext = _blas_backend._fortran_gemms(_numpy_lib())
    for m, n, k, name in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        t = {"scipy": [], "numpy": []}
        with threadpool_limits(1, user_api="blas"):  # both copies on one thread
            for _ in range(repeats):
                for which in ("scipy", "numpy"):
                    blas.use_external(*(ext if which == "numpy" else (0, 0, False)))
                    t0 = time.perf_counter()
                    gemms(False, False, 1.0, a, b, 0.0, c, 1)
                    t[which].append(time.perf_counter() - t0)
        gf = {w: 2 * m * n * k / min(v) / 1e9 for w, v in t.items()}
        rows.append((name, m, n, k, gf["scipy"], gf["numpy"]))
    _blas_backend._chosen = None  # re-route as convcore would
    _blas_backend.select()
    return rows


def _numpy_lib():
    from threadpoolctl import ThreadpoolController
    return next(lib for lib in ThreadpoolController().lib_controllers
                if lib.user_api == "blas" and _blas_backend._under(lib, np))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20, help="timed calls per shape and BLAS")
    p.add_argument("--markdown", help="also write the table to this file")
    args = p.parse_args(argv)
    _blas_backend.select()
    rows = measure(args.repeats)
    from threadpoolctl import threadpool_info
    libs = {os.path.basename(i["filepath"]): i["version"] for i in threadpool_info()
            if i["user_api"] == "blas"}
    lines = ["# Single-thread sgemm: scipy's OpenBLAS vs numpy's, at convolution shapes", "",
             f"- libraries: {', '.join(f'{k} {v}' for k, v in libs.items())}",
             f"- kernels use: {_blas_backend.describe()}",
             f"- command: `python benchmarks/blas_backends.py --repeats {args.repeats}`", "",
             "| layer | m | n | k | scipy GF/s | numpy GF/s | numpy / scipy |",
             "|---|---|---|---|---|---|---|"]
    for name, m, n, k, s, nb in rows:
        lines.append(f"| {name} | {m} | {n} | {k} | {s:.1f} | {nb:.1f} | {nb / s:.2f} |")
    ratios = [r[5] / r[4] for r in rows]
    lines += ["", f"Median speed-up of numpy's copy: {statistics.median(ratios):.2f}x "
              f"(range {min(ratios):.2f}-{max(ratios):.2f})."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
