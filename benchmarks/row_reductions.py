"""Row reductions of the norms and pooling: which summation to use.

    python benchmarks/row_reductions.py [--markdown benchmarks/results/row_reductions.md]

Pooling, batch norm and group/layer norm reduce rows of floats: a sum
(mean) and a sum of squared deviations from the mean (variance, two-pass).
Candidates, all sums with a fixed order (no dependence on threads):

double-simd   double accumulator, `omp simd reduction`: the compiler picks
              the lanes (2 doubles with SSE2, 4 with AVX2)
double-8      double accumulator in 8 explicit lanes, summed pairwise at the
              end: the same order whatever the vector width
float-block   float arithmetic (twice the SIMD width of double) on blocks of
              256 elements, each block's total added in double; the mean is
              split hi + lo in two floats so x - mean keeps its digits
shipped       convcore/_kernels/row_reductions.h as built into convcore:
              double-8 with `omp simd` on the lane loop (vectorised at any
              width) and no fused multiply-add, so every copy gives the
              same bits

Accuracy: error of mean and variance against an exact reference
(math.fsum in float64 of the float values) on random rows, rows with a
large mean and a small spread, and long rows. Speed: GB/s read per call on
rows of 7 .. 50176 elements (CNN planes 7x7 .. 224x224), float32 and
float64, one thread, timed inside C (median of repeats), for the baseline
x86-64 build and for the AVX2+FMA copy (-march=x86-64-v3) that
CONVCORE_CLONES picks at load time on recent CPUs.
"""
import argparse
import ctypes
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join(HERE, os.pardir, "convcore", "_kernels")
LENGTHS = [7, 16, 49, 196, 784, 3136, 12544, 50176]
CANDIDATES = ["double-simd", "double-8", "float-block", "shipped"]

SOURCE = r"""
#include <stddef.h>
#include <time.h>
#include <stdlib.h>
#include "row_reductions.h"
typedef ptrdiff_t idx;

#define SIMD_FAMILY(T, S)                                                     \
static double simd_sum_##S(const T* a, idx n) {                               \
    double acc = 0;                                                           \
    _Pragma("omp simd reduction(+:acc)")                                      \
    for (idx i = 0; i < n; ++i) acc += (double)a[i];                          \
    return acc;                                                               \
}                                                                             \
static double simd_sqdev_##S(const T* a, idx n, double m) {                   \
    double acc = 0;                                                           \
    _Pragma("omp simd reduction(+:acc)")                                      \
    for (idx i = 0; i < n; ++i) { double d = (double)a[i] - m; acc += d * d; } \
    return acc;                                                               \
}
SIMD_FAMILY(float, f)
SIMD_FAMILY(double, d)

#define LANES8_FAMILY(T, S)                                                   \
static double lanes8_sum_##S(const T* x, idx n) {                             \
    double a[8] = {0}; idx i = 0, j;                                          \
    for (; i + 8 <= n; i += 8) for (j = 0; j < 8; ++j) a[j] += (double)x[i + j]; \
    for (j = 0; i < n; ++i, ++j) a[j] += (double)x[i];                        \
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); \
}                                                                             \
static double lanes8_sqdev_##S(const T* x, idx n, double mu) {                \
    double a[8] = {0}, d; idx i = 0, j;                                       \
    for (; i + 8 <= n; i += 8)                                                \
        for (j = 0; j < 8; ++j) { d = (double)x[i + j] - mu; a[j] += d * d; } \
    for (j = 0; i < n; ++i, ++j) { d = (double)x[i] - mu; a[j] += d * d; }    \
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); \
}
LANES8_FAMILY(float, f)
LANES8_FAMILY(double, d)

static double block_sum_f(const float* a, idx n) {
    double acc = 0;
    for (idx lo = 0; lo < n; lo += 256) {
        idx len = n - lo < 256 ? n - lo : 256; float s = 0;
        _Pragma("omp simd reduction(+:s)")
        for (idx i = 0; i < len; ++i) s += a[lo + i];
        acc += s;
    }
    return acc;
}
static double block_sqdev_f(const float* a, idx n, double m) {
    const float hi = (float)m, lo_part = (float)(m - hi);
    double acc = 0;
    for (idx lo = 0; lo < n; lo += 256) {
        idx len = n - lo < 256 ? n - lo : 256; float s = 0;
        _Pragma("omp simd reduction(+:s)")
        for (idx i = 0; i < len; ++i) { float d = (a[lo + i] - hi) - lo_part; s += d * d; }
        acc += s;
    }
    return acc;
}

typedef double (*sum_fn)(const void*, idx);
typedef double (*sqdev_fn)(const void*, idx, double);

static sum_fn pick_sum(int which, int dbl) {
    switch (which) {
    case 0: return dbl ? (sum_fn)simd_sum_d : (sum_fn)simd_sum_f;
    case 1: return dbl ? (sum_fn)lanes8_sum_d : (sum_fn)lanes8_sum_f;
    case 2: return dbl ? (sum_fn)simd_sum_d : (sum_fn)block_sum_f;
    default: return dbl ? (sum_fn)convcore_row_sum_d : (sum_fn)convcore_row_sum_f;
    }
}
static sqdev_fn pick_sqdev(int which, int dbl) {
    switch (which) {
    case 0: return dbl ? (sqdev_fn)simd_sqdev_d : (sqdev_fn)simd_sqdev_f;
    case 1: return dbl ? (sqdev_fn)lanes8_sqdev_d : (sqdev_fn)lanes8_sqdev_f;
    case 2: return dbl ? (sqdev_fn)simd_sqdev_d : (sqdev_fn)block_sqdev_f;
    default: return dbl ? (sqdev_fn)convcore_row_sqdev_d : (sqdev_fn)convcore_row_sqdev_f;
    }
}

/* mean and sum of squared deviations of one row, as the kernels do it */
void stats(int which, int dbl, const void* a, idx n, double* mean, double* sqdev) {
    *mean = pick_sum(which, dbl)(a, n) / n;
    *sqdev = pick_sqdev(which, dbl)(a, n, *mean);
}

static double now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
static int cmp(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b; return (x > y) - (x < y);
}
/* median over `repeats` of the time per call of sum then sqdev over
   `rows` consecutive rows of n elements (a working set like a plane loop) */
double time_stats(int which, int dbl, const void* a, idx n, idx rows,
                  int calls, int repeats) {
    sum_fn s = pick_sum(which, dbl); sqdev_fn q = pick_sqdev(which, dbl);
    size_t elem = dbl ? 8 : 4;
    double* t = malloc(sizeof(double) * repeats), sink = 0, med;
    for (int r = 0; r < repeats; ++r) {
        double t0 = now();
        for (int c = 0; c < calls; ++c)
            for (idx k = 0; k < rows; ++k) {
                const char* row = (const char*)a + (size_t)k * n * elem;
                double m = s(row, n) / n; sink += q(row, n, m);
            }
        t[r] = (now() - t0) / ((double)calls * rows);
    }
    qsort(t, repeats, sizeof(double), cmp);
    med = t[repeats / 2]; free(t);
    return sink == 12345.678 ? 0 : med;
}
"""


def build(tmp, name, extra):
    src = os.path.join(tmp, "rows.c")
    with open(src, "w") as f:
        f.write(SOURCE)
    lib = os.path.join(tmp, name + ".so")
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O3", "-fno-math-errno", "-fopenmp-simd", "-fPIC", "-shared",
                    "-I", KERNELS, *extra, src, "-o", lib], check=True)
    so = ctypes.CDLL(lib)
    so.stats.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_ssize_t,
                         ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double)]
    so.time_stats.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_ssize_t,
                              ctypes.c_ssize_t, ctypes.c_int, ctypes.c_int]
    so.time_stats.restype = ctypes.c_double
    return so


def rows_for_accuracy(rng):
    """(name, list of float32 rows)."""
    return [
        ("normal(0, 1), n=3136", [rng.standard_normal(3136) for _ in range(20)]),
        ("1000 + 0.01*normal, n=3136", [1000 + 0.01 * rng.standard_normal(3136)
                                        for _ in range(20)]),
        ("100 + normal, n=50176", [100 + rng.standard_normal(50176) for _ in range(10)]),
        ("uniform[0, 1), n=50176", [rng.random(50176) for _ in range(10)]),
        ("1e4 + uniform[0, 1), n=12544", [1e4 + rng.random(12544) for _ in range(10)]),
    ]


def accuracy(so, dtype):
    rng = np.random.default_rng(0)
    out = []
    dbl = int(dtype == np.float64)
    for name, rows in rows_for_accuracy(rng):
        errs = {c: [0.0, 0.0] for c in CANDIDATES}
        for row in rows:
            x = np.ascontiguousarray(row, dtype=dtype)
            vals = [float(v) for v in x]
            mean = math.fsum(vals) / len(vals)
            var = math.fsum((v - mean) ** 2 for v in vals) / len(vals)
            for i, c in enumerate(CANDIDATES):
                m, q = ctypes.c_double(), ctypes.c_double()
                so.stats(i, dbl, x.ctypes.data, len(x), ctypes.byref(m), ctypes.byref(q))
                e = errs[c]
                e[0] = max(e[0], abs(m.value - mean) / max(abs(mean), 1e-300))
                e[1] = max(e[1], abs(q.value / len(x) - var) / var)
        out.append((name, errs))
    return out


def same_bits(builds, cloned):
    """Rows (of 50) whose mean and variance are the same bits in every build:
    the candidates' CPU dependence. `cloned` is the header as convcore
    builds it, the copy picked at load time for this CPU."""
    rng = np.random.default_rng(2)
    rows = [100 + rng.standard_normal(3136 + k) for k in range(50)]
    sos = list(builds.values()) + [cloned]
    lines = ["## Same bits in the x86-64, x86-64-v3 and load-time-clone builds "
             "(rows of 50)", "", "| dtype | " + " | ".join(CANDIDATES) + " |",
             "|---|" + "---|" * len(CANDIDATES)]
    for dtype in (np.float32, np.float64):
        dbl = int(dtype == np.float64)
        same = {c: 0 for c in CANDIDATES}
        for row in rows:
            x = row.astype(dtype)
            for i, c in enumerate(CANDIDATES):
                outs = set()
                for so in sos:
                    m, q = ctypes.c_double(), ctypes.c_double()
                    so.stats(i, dbl, x.ctypes.data, len(x), ctypes.byref(m), ctypes.byref(q))
                    outs.add((m.value, q.value))
                same[c] += len(outs) == 1
        lines.append(f"| {np.dtype(dtype).name} | " + " | ".join(
            str(same[c]) for c in CANDIDATES) + " |")
    return lines + [""]


def speed(so, dtype, repeats):
    dbl = int(dtype == np.float64)
    res = {}
    for n in LENGTHS:
        rows = max(1, 200_000 // n)  # ~0.8 MB of float32: in L2/L3 like a plane loop
        x = np.random.default_rng(1).standard_normal(rows * n).astype(dtype)
        calls = max(1, 2_000_000 // (rows * n))
        for i, c in enumerate(CANDIDATES):
            t = so.time_stats(i, dbl, x.ctypes.data, n, rows, calls, repeats)
            res[(n, c)] = 2 * n * x.itemsize / t / 1e9  # two passes over the row
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--markdown", help="write the tables to this file")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    if shutil.which(os.environ.get("CC", "cc")) is None:
        sys.exit("needs a C compiler (cc or $CC)")
    lines = ["# Row reductions: accuracy and speed", "",
             "`python benchmarks/row_reductions.py --markdown "
             "benchmarks/results/row_reductions.md`; candidates in the script's "
             "docstring. `shipped` is `convcore/_kernels/row_reductions.h`.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        one_copy = ["-DCONVCORE_NO_CLONES"]
        builds = {"x86-64": build(tmp, "base", one_copy),
                  "x86-64-v3 (AVX2+FMA)": build(tmp, "v3", ["-march=x86-64-v3"] + one_copy)}
        cloned = build(tmp, "clones", [])
        lines += same_bits(builds, cloned)
        for dtype in (np.float32, np.float64):
            dn = np.dtype(dtype).name
            lines += [f"## Accuracy, {dn}: max relative error of mean / variance "
                      "(baseline build)", "",
                      "| rows | " + " | ".join(CANDIDATES) + " |",
                      "|---|" + "---|" * len(CANDIDATES)]
            for name, errs in accuracy(builds["x86-64"], dtype):
                lines.append(f"| {name} | " + " | ".join(
                    f"{errs[c][0]:.1e} / {errs[c][1]:.1e}" for c in CANDIDATES) + " |")
            lines.append("")
        for bname, so in builds.items():
            for dtype in (np.float32, np.float64):
                dn = np.dtype(dtype).name
                res = speed(so, dtype, args.repeats)
                lines += [f"## Speed, {dn}, {bname} build: GB/s (mean + variance, "
                          "two passes; median of repeats, one thread)", "",
                          "| n | " + " | ".join(CANDIDATES) + " |",
                          "|---|" + "---|" * len(CANDIDATES)]
                for n in LENGTHS:
                    lines.append(f"| {n} | " + " | ".join(
                        f"{res[(n, c)]:.1f}" for c in CANDIDATES) + " |")
                lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
