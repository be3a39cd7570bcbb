"""Presenting benchmark results: a text table for the terminal, JSON, CSV,
Markdown (the files under benchmarks/results) and PNG charts."""
import csv
import datetime
import json
import os
import platform
import sys

import numpy as np

# (header, row key, format) of the table columns, shared by text and Markdown.
COLUMNS = [
    ("impl", "impl", "{}"),
    ("fwd ms", "fwd_ms", "{:.3f}"),
    ("±%", "fwd_spread", "pct0"),
    ("bwd-data ms", "bwd_data_ms", "{:.3f}"),
    ("bwd-wt ms", "bwd_weight_ms", "{:.3f}"),
    ("fwd GF/s", "fwd_gflops", "{:.1f}"),
    ("f+b GF/s", "fwd_bwd_gflops", "{:.1f}"),
    ("%peak fwd", "peak_share_fwd", "pct0"),
    ("scratch", "scratch_fwd_bytes", "bytes"),
    ("agree", "agree", "agree"),
    ("/torch fwd", "vs_torch_fwd", "{:.2f}"),
    ("/torch f+b", "vs_torch_fwd_bwd", "{:.2f}"),
    ("auto/best", "auto_vs_best_fwd_bwd", "{:.2f}"),
]


def _fmt(value, how, row=None):
    if value is None:
        return "-"
    if how == "pct0":
        return f"{100 * value:.0f}%"
    if how == "bytes":
        if value >= 1 << 20:
            return f"{value / (1 << 20):.1f}M"
        if value >= 1 << 10:
            return f"{value / (1 << 10):.0f}K"
        return str(value)
    if how == "agree":
        return "yes" if value else f"NO ({row['max_rel_diff']:.1e})"
    return how.format(value)


def _table_rows(rows, with_threads):
    """Cells per row; the configuration name only on its first row."""
    out, last = [], None
    for r in rows:
        key = (r["name"], r["threads"])
        name = r["name"] if key != last else ""
        if r["impl"] == "auto" and r.get("auto_choice"):
            impl = f"auto:{r['auto_choice']}"
        else:
            impl = r["impl"]
        cells = [name] + ([str(r["threads"])] if with_threads else [])
        cells += [impl] + [_fmt(r.get(k), how, r) for _, k, how in COLUMNS[1:]]
        out.append(cells)
        last = key
    return out


def _headers(with_threads):
    return ["config"] + (["thr"] if with_threads else []) + [h for h, _, _ in COLUMNS]


def text_table(rows):
    with_threads = len({r["threads"] for r in rows}) > 1
    headers = _headers(with_threads)
    body = _table_rows(rows, with_threads)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(headers, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for cells in body:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))))
    return "\n".join(lines)


def summary_lines(result, summary):
    samples = result.get("peak_samples", {})
    peaks = ", ".join(
        f"{t} thread{'s' if t > 1 else ''}: {g:.1f} GFLOP/s"
        + (" (start {:.0f}, end {:.0f})".format(*samples[t]) if t in samples else "")
        for t, g in result["peaks"].items())
    lines = [f"measured {result.get('dtype', 'float32')} GEMM peak (the kernels' BLAS, "
             f"higher of run start and end): {peaks}"]
    for name, e in summary["impls"].items():
        parts = [f"{name:>8}: {e['configs']} runs, agree {'all' if e['all_agree'] else 'NOT ALL'}"]
        if e.get("median_peak_share_fwd") is not None:
            parts.append(f"median {100 * e['median_peak_share_fwd']:.0f}% of peak fwd")
        if e.get("median_vs_torch_fwd") is not None:
            parts.append(f"median time / torch: fwd {e['median_vs_torch_fwd']:.2f}")
        if e.get("median_vs_torch_fwd_bwd") is not None:
            parts.append(f"fwd+bwd {e['median_vs_torch_fwd_bwd']:.2f}")
        if e.get("median_vs_torch_fwd_bwd_min") is not None:
            parts.append(f"(fastest samples: fwd {e['median_vs_torch_fwd_min']:.2f}, "
                         f"fwd+bwd {e['median_vs_torch_fwd_bwd_min']:.2f})")
        lines.append(", ".join(parts))
    a = summary.get("auto")
    if a:
        parts = ["auto within 10% of the best algorithm: "]
        for key, label in (("fwd", "forward"), ("fwd_bwd", "fwd+bwd")):
            if f"within10_{key}" in a:
                parts.append(f"{label} {100 * a[f'within10_{key}']:.0f}% of {a['configs']} "
                             f"configurations (its pick alone: "
                             f"{100 * a.get(f'pick_within10_{key}', 0):.0f}%)")
        lines.append(parts[0] + "; ".join(parts[1:]))
    for net, totals in summary["networks"].items():
        lines.append(f"{net} convolutions, count-weighted total ms: "
                     + ", ".join(f"{k} {v:.1f}" for k, v in totals.items()))
    if result.get("skipped"):
        lines.append(f"skipped {len(result['skipped'])} configurations: "
                     + "; ".join(f"{n} ({why})" for n, why in result["skipped"][:3]))
    return lines


def machine_info(threads_list, torch_version):
    """Header facts: CPU, cores, versions, BLAS, threads, date."""
    import scipy

    import convcore
    from convcore.cli import info as _info
    info = _info.info_dict()
    blas = info["blas"]
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": info["cpu"],
        "simd": info["simd"],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": info["python"],
        "convcore": convcore.__version__,
        "numpy": info["numpy"],
        "scipy": scipy.__version__,
        "torch": torch_version,
        "openmp": info["openmp"],
        "compiler_flags": info["flags"],
        "blas": [f"{b.get('internal_api')} {b.get('version')} ({os.path.basename(b.get('filepath') or '')})"
                 for b in blas],
        "threads": list(threads_list),
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
    }


def to_json(path, meta, result, summary):
    payload = {"meta": meta, "peaks_gflops": {str(k): v for k, v in result["peaks"].items()},
               "peak_samples_gflops": {str(k): v for k, v in result.get("peak_samples", {}).items()},
               "summary": summary, "skipped": result["skipped"], "results": result["rows"]}
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return str(o)


def csv_fields(rows):
    """Every scalar column, in first-seen order (raw samples stay in JSON)."""
    fields = []
    for r in rows:
        for k in r:
            if k != "times_s" and k not in fields:
                fields.append(k)
    return fields


def to_csv(path, rows):
    fields = csv_fields(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})


def to_markdown(path, meta, result, summary, title="convcore benchmark", note=None):
    with_threads = len({r["threads"] for r in result["rows"]}) > 1
    lines = [f"# {title}", ""]
    lines += [
        f"- date: {meta['date_utc']}",
        f"- machine: {meta['cpu']} ({meta['usable_cpus']} usable of {meta['logical_cpus']} "
        f"logical CPUs; SIMD {', '.join(meta['simd'])}), {meta['platform']}",
        f"- threads: {', '.join(map(str, meta['threads']))} (convcore and PyTorch alike)",
        f"- versions: convcore {meta['convcore']}, Python {meta['python']}, numpy {meta['numpy']}, "
        f"scipy {meta['scipy']}, PyTorch {meta['torch'] or 'not installed'}; "
        f"BLAS {'; '.join(meta['blas'])}; OpenMP {'on' if meta['openmp'] else 'off'}; "
        f"flags `{meta['compiler_flags']}`",
        f"- command: `{meta['command']}`",
    ]
    if note:
        lines.append(f"- note: {note}")
    lines += ["", "## Summary", ""]
    lines += [f"- {s}" for s in summary_lines(result, summary)]
    lines += _versus_torch_section(result["rows"], with_threads)
    lines += ["", "## Results", "",
              "Times are medians of the repeats; ±% is the inter-quartile range of the "
              "forward samples over the median. GF/s counts 2 x multiply-adds; backward-data "
              "and backward-weight have the forward's flop count each. %peak is against the "
              "measured GEMM peak above. /torch is convcore's time over PyTorch's (below 1: "
              "convcore faster). auto/best: auto's fwd+bwd time over the best algorithm's.", ""]
    headers = _headers(with_threads)
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    for cells in _table_rows(result["rows"], with_threads):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _versus_torch_section(rows, with_threads):
    """The headline table: what a user gets (algorithm="auto") against
    PyTorch, per configuration; empty without torch rows."""
    pairs = []
    for r in rows:
        if r["impl"] != "auto":
            continue
        t = next((q for q in rows if q["impl"] == "torch" and q["name"] == r["name"]
                  and q["threads"] == r["threads"]), None)
        if t is not None:
            pairs.append((r, t))
    if not pairs:
        return []
    has_bwd = pairs[0][0]["fwd_bwd_ms"] is not None
    head = ["config"] + (["thr"] if with_threads else []) + \
        ["auto picks", "fwd ms", "torch fwd ms", "ratio fwd", "%peak fwd"]
    if has_bwd:
        head += ["f+b ms", "torch f+b ms", "ratio f+b", "%peak f+b"]
    lines = ["", "## convcore (auto) vs PyTorch", "",
             "Medians; ratio = convcore / PyTorch (below 1: convcore faster); %peak: "
             "GFLOP/s over the measured GEMM peak.", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r, t in pairs:
        cells = [r["name"]] + ([str(r["threads"])] if with_threads else []) + [
            r["auto_choice"] or "-", f"{r['fwd_ms']:.3f}", f"{t['fwd_ms']:.3f}",
            f"{r['vs_torch_fwd']:.2f}", _fmt(r["peak_share_fwd"], "pct0")]
        if has_bwd:
            cells += [f"{r['fwd_bwd_ms']:.3f}", f"{t['fwd_bwd_ms']:.3f}",
                      f"{r['vs_torch_fwd_bwd']:.2f}", _fmt(r["peak_share_fwd_bwd"], "pct0")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# Axes a chart can sweep: label -> value of a row.
_SWEEPS = {
    "kernel": lambda r: r["R"],
    "stride": lambda r: r["stride"],
    "padding": lambda r: str(r["padding"]),
    "dilation": lambda r: r["dilation"],
    "groups": lambda r: "depthwise" if r["depthwise"] else str(r["groups"]),
    "threads": lambda r: r["threads"],
}


def to_png(path, rows, title="convcore benchmark"):
    """GFLOP/s per implementation over each parameter that varies in the run
    (median over the other parameters), forward solid and fwd+bwd dashed;
    a run of named layers gets a bar chart per layer instead."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = list(dict.fromkeys(r["impl"] for r in rows))
    sweeps = [k for k, f in _SWEEPS.items() if len({f(r) for r in rows}) > 1]
    layered = any(r["suite"] not in ("quick", "full", "grid", "custom") for r in rows)
    if layered or not sweeps:
        names = list(dict.fromkeys(r["name"] for r in rows))
        fig, ax = plt.subplots(figsize=(min(30, max(6, 0.25 * len(names) * len(impls))), 4.5))
        width = 0.8 / len(impls)
        for j, impl in enumerate(impls):
            vals = []
            for n in names:
                g = [r["fwd_gflops"] for r in rows if r["name"] == n and r["impl"] == impl]
                vals.append(np.median(g) if g else 0)
            ax.bar(np.arange(len(names)) + j * width, vals, width, label=impl)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("forward GFLOP/s")
        ax.legend()
        ax.set_title(title)
    else:
        fig, axes = plt.subplots(1, len(sweeps), figsize=(4 * len(sweeps), 3.6), squeeze=False)
        for ax, sweep in zip(axes[0], sweeps):
            f = _SWEEPS[sweep]
            xs = sorted({f(r) for r in rows}, key=lambda v: (isinstance(v, str), v))
            for j, impl in enumerate(impls):
                for col, style in (("fwd_gflops", "-o"), ("fwd_bwd_gflops", "--x")):
                    ys = []
                    for x in xs:
                        g = [r[col] for r in rows if r["impl"] == impl and f(r) == x
                             and r.get(col) is not None]
                        ys.append(np.median(g) if g else np.nan)
                    if not all(np.isnan(ys)):
                        ax.plot([str(x) for x in xs], ys, style, color=f"C{j}",
                                label=f"{impl} {'fwd' if col == 'fwd_gflops' else 'f+b'}")
            ax.set_xlabel(sweep)
            ax.set_ylabel("GFLOP/s (median)")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
