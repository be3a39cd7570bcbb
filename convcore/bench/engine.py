"""Timing engine: every algorithm (and PyTorch, when it imports) on each
configuration, forward, backward-data and backward-weight.

How a configuration is measured
    1. warm-up: each implementation runs each pass once (more with
       `warmup`); the first outputs are kept for the agreement check and
       the first time sets `inner`, the calls per sample, so that a sample
       lasts at least `min_time` (the timer then dominates nothing).
    2. rounds: in each round every implementation runs every pass once,
       the implementations in a fresh random order (seeded), so a drift of
       the machine (another process, frequency scaling) hits all alike and
       no implementation always runs right after the same other one (a
       rotation would keep the neighbours: spinning threads or a cache
       left by one would always tax the next). At least
       `repeats` rounds, then more while the configuration's `budget`
       (seconds) lasts, up to MAX_ROUNDS: on a shared machine a 2-thread
       OpenMP call whose thread is descheduled can take many times longer,
       and many short samples let the median ignore those, where a few
       long ones would each be hit.
    3. median and spread (inter-quartile range / median) per pass; the
       fastest sample is kept too (`*_min_ms`, what an idle machine gives).
The sgemm (dgemm for float64) peak is measured at the start of each
thread count with the very BLAS the kernels call (scipy's, through
convcore._kernels.blas.gemm_py), so "% of peak" is against what this
machine can do now, not a datasheet figure. It is measured again when
that thread count's configurations are done and the higher of the two
is used: on a shared machine one measurement may fall into a busy moment
and make every share look too good.
"""
import math
import time

import numpy as np

import convcore
from convcore import algorithms
from convcore._runtime import threads as _threads
from convcore._kernels import blas
from convcore.functional import conv2d, conv2d_backward

PASSES = ("fwd", "bwd_data", "bwd_weight")
MAX_ROUNDS = 200

# Largest relative difference (max |a - b| / max |b|) between two
# implementations still called agreement: float32 sums of thousands of
# products differ in the last bits by the order of summation.
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def measure_peak(dtype=np.float32, threads=None, size=1024, repeats=5):
    """GFLOP/s of a size^3 GEMM through the kernels' own BLAS entry point
    split over `threads` of convcore's threads as the kernels split theirs
    (best of `repeats`: the ceiling, not the mean)."""
    dtype = np.dtype(dtype)
    threads = threads or convcore.get_num_threads()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    c = np.zeros((size, size), dtype=dtype)
    gemm = blas.gemm_py["float" if dtype == np.float32 else "double"]
    best = math.inf
    with _threads.blas_single():
        gemm(False, False, 1.0, a, b, 0.0, c, threads)  # warm-up: page in, spin up
        for _ in range(repeats):
            t0 = time.perf_counter()
            gemm(False, False, 1.0, a, b, 0.0, c, threads)
            best = min(best, time.perf_counter() - t0)
    return 2.0 * size ** 3 / best / 1e9


def torch_module():
    """torch, or None when it does not import (CI has no torch)."""
    try:
        import torch
    except Exception:  # ImportError, or a broken install: compare without it
        return None
    return torch


def padding_arg(spec):
    """The `padding` argument reproducing spec: a pair when symmetric, else
    "same" (the only way conv2d produces asymmetric padding)."""
    if spec.padding_total == (2 * spec.padding[0], 2 * spec.padding[1]):
        return spec.padding
    return "same"


def scratch_bytes(name, spec, backward):
    """Bytes of scratch one call of algorithm `name` allocates (each
    algorithm knows its own plan: convcore.algorithms)."""
    return algorithms.get_algorithm(name, spec, "bench").scratch_bytes(spec, backward)


def _supported(name, spec):
    try:
        algorithms.get_algorithm(name, spec, "bench")
    except ValueError:
        return False
    return True


class _Impl:
    """One implementation under test: a name and a callable per pass."""

    def __init__(self, name, passes, choice=None, scratch=(None, None)):
        self.name = name
        self.passes = passes          # pass name -> zero-argument callable
        self.choice = choice          # for "auto": the algorithm it picked
        self.scratch = scratch        # (forward bytes, backward bytes)


def _convcore_impl(name, x, w, gy, spec, backward):
    stride, dilation, groups = spec.stride, spec.dilation, spec.groups
    padding = padding_arg(spec)
    passes = {"fwd": lambda: conv2d(x, w, None, stride, padding, dilation,
                                    groups, algorithm=name)}
    if backward:
        passes["bwd_data"] = lambda: conv2d_backward(
            gy, x, w, stride, padding, dilation, groups, algorithm=name,
            bias=False, input_grad=True, weight_grad=False)[0]
        passes["bwd_weight"] = lambda: conv2d_backward(
            gy, x, w, stride, padding, dilation, groups, algorithm=name,
            bias=False, input_grad=False, weight_grad=True)[1]
    choice = algorithms.get_algorithm(name, spec, "bench").name
    scratch = (scratch_bytes(name, spec, False),
               scratch_bytes(name, spec, True) if backward else None)
    return _Impl(name, passes, choice if name == "auto" else None, scratch)


def _torch_impl(torch, x, w, gy, spec, backward):
    """PyTorch's CPU convolution on the same arrays (shared memory), through
    the same entry points autograd uses (aten.convolution_backward with an
    output mask, so only the asked gradient is computed). None when torch
    cannot express the padding symmetrically."""
    if padding_arg(spec) == "same":
        return None
    tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
    stride, padding, dilation = list(spec.stride), list(spec.padding), list(spec.dilation)
    groups = spec.groups
    conv = torch.nn.functional.conv2d
    bwd = torch.ops.aten.convolution_backward

    def fwd():
        with torch.no_grad():
            return conv(tx, tw, None, stride, padding, dilation, groups).numpy()

    passes = {"fwd": fwd}
    if backward:
        passes["bwd_data"] = lambda: bwd(tgy, tx, tw, None, stride, padding, dilation,
                                         False, [0, 0], groups, [True, False, False])[0].numpy()
        passes["bwd_weight"] = lambda: bwd(tgy, tx, tw, None, stride, padding, dilation,
                                           False, [0, 0], groups, [False, True, False])[1].numpy()
    return _Impl("torch", passes)


def _time(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def _rel_diff(a, ref):
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(a.astype(np.float64) - ref))) if ref.size else 0.0
    return diff / scale if scale > 0 else diff


def _stats(samples):
    """(median seconds, spread = IQR / median) of a list of samples."""
    s = np.asarray(samples)
    med = float(np.median(s))
    q1, q3 = np.percentile(s, [25, 75])
    return med, (float(q3 - q1) / med if med > 0 else 0.0)


def measure_config(cfg, algos, dtype=np.float32, threads=None, repeats=5, warmup=1,
                   min_time=0.0002, budget=1.0, torch=None, backward=True,
                   weight_scale=1.0, peak=None, seed=0):
    """Rows (one dict per implementation) for one BenchConfig; see the
    module docstring for the protocol. `torch`: the torch module or None."""
    dtype = np.dtype(dtype)
    threads = threads or convcore.get_num_threads()
    spec = cfg.spec(dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg.x_shape).astype(dtype)
    w = (rng.standard_normal(cfg.w_shape) * weight_scale).astype(dtype)
    gy = rng.standard_normal(spec.out_shape).astype(dtype)

    # A specialised algorithm that does not support this configuration is
    # left out of it (as "auto" would never pick it there).
    algos = [a for a in algos if _supported(a, spec)]
    impls = [_convcore_impl(a, x, w, gy, spec, backward) for a in algos]
    if torch is not None:
        t_impl = _torch_impl(torch, x, w, gy, spec, backward)
        if t_impl is not None:
            impls.append(t_impl)
    passes = PASSES if backward else ("fwd",)

    # Warm-up; the first outputs serve the agreement check.
    outputs, inner = {}, {}
    for impl in impls:
        for p in passes:
            t0 = time.perf_counter()
            out = impl.passes[p]()
            first = time.perf_counter() - t0
            for _ in range(warmup - 1):
                impl.passes[p]()
            outputs[impl.name, p] = np.asarray(out, dtype=np.float64)
            inner[impl.name, p] = max(1, min(1000, math.ceil(min_time / max(first, 1e-9))))

    samples = {(i.name, p): [] for i in impls for p in passes}
    start, r = time.perf_counter(), 0
    shuffle = np.random.default_rng(seed)
    while r < repeats or (time.perf_counter() - start < budget and r < MAX_ROUNDS):
        for j in shuffle.permutation(len(impls)):
            impl = impls[j]
            for p in passes:
                samples[impl.name, p].append(_time(impl.passes[p], inner[impl.name, p]))
        r += 1

    # Reference: the first concrete convcore algorithm.
    ref_name = next((a for a in algos if a != "auto"), algos[0])
    tol = TOLERANCE[dtype]
    flops = spec.flops()
    rows = []
    for impl in impls:
        row = {**cfg.params(), "dtype": dtype.name, "threads": threads,
               "impl": impl.name, "auto_choice": impl.choice, "flops": flops,
               "scratch_fwd_bytes": impl.scratch[0], "scratch_bwd_bytes": impl.scratch[1]}
        total = 0.0
        for p in PASSES:
            if p in passes:
                med, spread = _stats(samples[impl.name, p])
                row[f"{p}_ms"] = med * 1e3
                row[f"{p}_min_ms"] = min(samples[impl.name, p]) * 1e3
                row[f"{p}_spread"] = spread
                row[f"{p}_gflops"] = flops / med / 1e9
                total += med
            else:
                row[f"{p}_ms"] = row[f"{p}_min_ms"] = None
                row[f"{p}_spread"] = row[f"{p}_gflops"] = None
        row["fwd_bwd_ms"] = total * 1e3 if backward else None
        row["fwd_bwd_min_ms"] = (sum(row[f"{p}_min_ms"] for p in PASSES)
                                 if backward else None)
        row["fwd_bwd_gflops"] = 3 * flops / total / 1e9 if backward else None
        _set_peak(row, peak)
        row["max_rel_diff"] = max(_rel_diff(outputs[impl.name, p], outputs[ref_name, p])
                                  for p in passes)
        row["agree"] = row["max_rel_diff"] <= tol
        row["rounds"] = r
        row["times_s"] = {p: samples[impl.name, p] for p in passes}
        rows.append(row)
    _add_comparisons(rows)
    return rows


def _set_peak(row, peak):
    """Record the GEMM peak of the row's thread count and the shares of it."""
    row["peak_gflops"] = peak
    row["peak_share_fwd"] = row["fwd_gflops"] / peak if peak else None
    row["peak_share_fwd_bwd"] = (row["fwd_bwd_gflops"] / peak
                                 if peak and row["fwd_bwd_gflops"] else None)


def _add_comparisons(rows):
    """Ratios against PyTorch and, for "auto", against the best algorithm of
    the same configuration (best among the concrete convcore algorithms)."""
    by_impl = {r["impl"]: r for r in rows}
    t = by_impl.get("torch")
    concrete = [r for r in rows if r["impl"] not in ("torch", "auto")]
    for r in rows:
        # fastest samples too: on a loaded machine they show what the
        # medians lose to descheduling
        for key, col in (("fwd_min", "fwd_min_ms"), ("fwd_bwd_min", "fwd_bwd_min_ms")):
            ok = t is not None and r["impl"] != "torch" and r[col] and t[col]
            r[f"vs_torch_{key}"] = r[col] / t[col] if ok else None
        for key, col in (("fwd", "fwd_ms"), ("fwd_bwd", "fwd_bwd_ms")):
            ok = t is not None and r["impl"] != "torch" and r[col] and t[col]
            r[f"vs_torch_{key}"] = r[col] / t[col] if ok else None
            if r["impl"] == "auto" and concrete and r[col]:
                best = min(concrete, key=lambda c: c[col])
                picked = by_impl.get(r["auto_choice"])
                r[f"best_{key}"] = best["impl"]
                # auto's own timing against the best (includes noise) and
                # the timing of the algorithm it picked (the choice alone)
                r[f"auto_vs_best_{key}"] = r[col] / best[col]
                r[f"pick_vs_best_{key}"] = (picked[col] / best[col]
                                            if picked is not None else None)
            elif r["impl"] == "auto":
                r[f"best_{key}"] = r[f"auto_vs_best_{key}"] = r[f"pick_vs_best_{key}"] = None


def run_benchmark(configs, algos=None, dtype=np.float32, threads_list=None, repeats=5,
                  warmup=1, min_time=0.0002, budget=1.0, use_torch=True, backward=True,
                  weight_scale=1.0, peak_size=1024, deadline=None, progress=None):
    """Measure every configuration at every thread count.

    Returns {"rows": [...], "peaks": {threads: GFLOP/s}, "peak_samples":
    {threads: (at start, at end)}, "torch": version or None, "skipped":
    [(config name, reason)]}. `deadline`: seconds for the
    whole run; each configuration's budget shrinks to its share of what is
    left (its minimum rounds always run). `progress`: an object with
    update(n) and set_postfix_str(s) (a tqdm bar), or None.
    """
    algos = list(algos or convcore.conv_algorithms())
    threads_list = list(threads_list or [convcore.get_num_threads()])
    torch = torch_module() if use_torch else None
    saved = convcore.get_num_threads()
    saved_torch = torch.get_num_threads() if torch is not None else None
    rows, peaks, peak_samples, skipped = [], {}, {}, []
    start, total = time.perf_counter(), len(configs) * len(threads_list)
    done = 0
    try:
        for nt in threads_list:
            convcore.set_num_threads(nt)
            if torch is not None:
                torch.set_num_threads(nt)
            peak_start = measure_peak(dtype, nt, size=peak_size)
            first_row = len(rows)
            for i, cfg in enumerate(configs):
                if progress is not None:
                    progress.set_postfix_str(f"{nt}t {cfg.name}")
                share = budget
                if deadline is not None:
                    left = deadline - (time.perf_counter() - start)
                    share = min(budget, max(0.0, left / (total - done)))
                try:
                    rows += measure_config(cfg, algos, dtype, nt, repeats, warmup,
                                           min_time, share, torch, backward,
                                           weight_scale, None, seed=i)
                except (ValueError, MemoryError) as exc:
                    skipped.append((cfg.name, str(exc)))
                done += 1
                if progress is not None:
                    progress.update(1)
            peak_end = measure_peak(dtype, nt, size=peak_size)
            peaks[nt] = max(peak_start, peak_end)
            peak_samples[nt] = (peak_start, peak_end)
            for row in rows[first_row:]:
                _set_peak(row, peaks[nt])
    finally:
        convcore.set_num_threads(saved)
        if torch is not None:
            torch.set_num_threads(saved_torch)
    return {"rows": rows, "peaks": peaks, "peak_samples": peak_samples, "skipped": skipped,
            "torch": torch.__version__ if torch is not None else None}


def summarize(rows):
    """Headline figures: per implementation the median ratio to PyTorch and
    whether all results agreed; for "auto" the share of configurations
    within 10% of the best algorithm; per network suite the weighted total
    (count x time) of its convolutions."""
    out = {"impls": {}, "auto": None, "networks": {}}
    for name in dict.fromkeys(r["impl"] for r in rows):
        mine = [r for r in rows if r["impl"] == name]
        entry = {"configs": len(mine), "all_agree": all(r["agree"] for r in mine)}
        for key in ("fwd", "fwd_bwd", "fwd_min", "fwd_bwd_min"):
            ratios = [r[f"vs_torch_{key}"] for r in mine if r.get(f"vs_torch_{key}")]
            entry[f"median_vs_torch_{key}"] = float(np.median(ratios)) if ratios else None
        for key in ("fwd", "fwd_bwd"):
            shares = [r[f"peak_share_{key}"] for r in mine if r.get(f"peak_share_{key}")]
            entry[f"median_peak_share_{key}"] = float(np.median(shares)) if shares else None
        out["impls"][name] = entry
    auto = [r for r in rows if r["impl"] == "auto" and r.get("auto_vs_best_fwd")]
    if auto:
        a = {"configs": len(auto)}
        for key in ("fwd", "fwd_bwd"):
            vals = [r[f"auto_vs_best_{key}"] for r in auto if r.get(f"auto_vs_best_{key}")]
            picks = [r[f"pick_vs_best_{key}"] for r in auto if r.get(f"pick_vs_best_{key}")]
            if vals:
                a[f"within10_{key}"] = sum(v <= 1.10 for v in vals) / len(vals)
                a[f"median_auto_vs_best_{key}"] = float(np.median(vals))
            if picks:
                a[f"pick_within10_{key}"] = sum(v <= 1.10 for v in picks) / len(picks)
        out["auto"] = a
    for r in rows:
        if r["suite"] in ("quick", "full", "grid", "custom", "layers"):
            continue
        key = f"{r['suite']}@{r['threads']}t"
        net = out["networks"].setdefault(key, {})
        col = "fwd_bwd_ms" if r["fwd_bwd_ms"] is not None else "fwd_ms"
        net[r["impl"]] = net.get(r["impl"], 0.0) + r["count"] * r[col]
    return out
