"""How steady the machine itself is: the spread of identical calls of plain
NumPy and Python, from tens of microseconds to a tenth of a second.

Issue 13 asks that a network's 95th-percentile call time be at most 1.25x
its median. Whatever a library does, its calls cannot be steadier than the
machine they run on; this measures that floor. Each call repeats the same
work: k small element-wise NumPy passes and small matrix-vector products
(single-threaded, no allocation of note), or k rounds of a pure-Python
loop; k is calibrated so that a call lasts the target time. Calls run back
to back in one process for a few seconds per size:

    python benchmarks/machine_jitter.py [--seconds S] [--out FILE.md]

Reported per kind and size: median call, p95 / median, p99 / median, the
share of calls above 1.25x the median, and the slowest over the fastest
half-second median ("phases": the machine's speed drifting for a while,
as opposed to single slow calls). Results: benchmarks/results/machine_jitter.md.
"""
import argparse
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

TARGETS_MS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
MIN_CALLS = 40      # calls per size at least, however long they take
P95_TARGET = 1.25   # issue 13's bound on p95 / median
WINDOW = 0.5        # seconds per window of the phase spread

_clock = time.perf_counter


def numpy_unit():
    """One unit of NumPy work: an element-wise pass over a 6x28x28 map and
    a 120x84 matrix-vector product (LeNet-5's sizes)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 28, 28)).astype(np.float32)
    out = np.empty_like(a)
    w = rng.standard_normal((120, 84)).astype(np.float32)
    v = rng.standard_normal((1, 120)).astype(np.float32)
    y = np.empty((1, 84), np.float32)

    def unit():
        np.tanh(a, out=out)
        np.matmul(v, w, out=y)
    return unit


def python_unit():
    """One unit of pure-Python work (bytecode, no allocation to speak of)."""
    def unit():
        s = 0
        for i in range(200):
            s += i
        return s
    return unit


def repeated(unit, k):
    def call():
        for _ in range(k):
            unit()
    return call


def calibrate(unit, target_s):
    """Units per call so that a call lasts about `target_s`."""
    n, elapsed = 1, 0.0
    while elapsed < 0.05:
        t0 = _clock()
        for _ in range(n):
            unit()
        elapsed = _clock() - t0
        n *= 2
    per_unit = elapsed / (n // 2)
    return max(1, round(target_s / per_unit))


def sample(call, seconds):
    """Back-to-back calls for `seconds` (at least MIN_CALLS): durations and
    end times, in seconds."""
    for _ in range(3):
        call()
    times, ends = [], []
    start = _clock()
    while _clock() - start < seconds or len(times) < MIN_CALLS:
        t0 = _clock()
        call()
        t1 = _clock()
        times.append(t1 - t0)
        ends.append(t1 - start)
    return np.asarray(times), np.asarray(ends)


def spread(times, ends):
    """Statistics of one size's calls."""
    med = float(np.median(times))
    window_of = (ends // WINDOW).astype(int)
    windows = [np.median(times[window_of == w]) for w in np.unique(window_of)
               if np.count_nonzero(window_of == w) >= 5]
    return {
        "calls": len(times),
        "median_ms": med * 1e3,
        "p95_med": float(np.percentile(times, 95)) / med,
        "p99_med": float(np.percentile(times, 99)) / med,
        "above_target": float(np.mean(times > P95_TARGET * med)),
        "phases": float(max(windows) / min(windows)) if len(windows) > 1 else None,
    }


def measure(seconds, targets_ms=TARGETS_MS, progress=None):
    rows = []
    with threadpool_limits(limits=1):
        for kind, make in (("numpy", numpy_unit), ("python", python_unit)):
            unit = make()
            for target in targets_ms:
                k = calibrate(unit, target / 1e3)
                stats = spread(*sample(repeated(unit, k), seconds))
                rows.append({"kind": kind, "target_ms": target, "units": k, **stats})
                if progress:
                    progress(rows[-1])
    return rows


def _phases(v):
    return "-" if v is None else f"{v:.2f}"


def table_lines(rows):
    lines = ["| kind | target ms | median ms | p95/med | p99/med | calls > 1.25x med | "
             "phases (slowest/fastest 0.5 s) | calls |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['target_ms']:g} | {r['median_ms']:.3g} | "
                     f"{r['p95_med']:.2f} | {r['p99_med']:.2f} | {100 * r['above_target']:.1f}% | "
                     f"{_phases(r['phases'])} | {r['calls']} |")
    return lines


def markdown(rows, seconds, argv):
    from convcore.bench.report import machine_info
    meta = machine_info([1], None)
    return "\n".join([
        "# The machine's own spread: identical calls of plain NumPy and Python",
        "",
        f"- date: {meta['date_utc']}",
        f"- machine: {meta['cpu']} ({meta['usable_cpus']} usable of {meta['logical_cpus']} "
        f"logical CPUs), {meta['platform']}",
        f"- Python {meta['python']}, numpy {meta['numpy']}; BLAS {'; '.join(meta['blas'])}, "
        "held to 1 thread",
        f"- command: `python benchmarks/machine_jitter.py {' '.join(argv)}`",
        f"- {seconds:g} s of back-to-back calls per size (at least {MIN_CALLS} calls); "
        "a call repeats one unit of work k times: numpy = an element-wise pass over "
        "6x28x28 float32 and a 1x120 @ 120x84 product; python = a 200-step loop",
        "",
        *table_lines(rows),
        "",
    ])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="seconds of calls per kind and size (default 4)")
    parser.add_argument("--out", help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    rows = measure(args.seconds, progress=lambda r: print(
        f"{r['kind']:>6} {r['target_ms']:>6g} ms: median {r['median_ms']:.3g} ms, "
        f"p95/med {r['p95_med']:.2f}", file=sys.stderr, flush=True))
    print("\n".join(table_lines(rows)))
    if args.out:
        with open(args.out, "w") as f:
            f.write(markdown(rows, args.seconds, argv))


if __name__ == "__main__":
    main()
