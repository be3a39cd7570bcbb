"""What several runs of the whole-network benchmark say together.

One run of `benchmarks/networks.py` gives each workload's import-order gap
and p95/median from two processes per order, and on a shared machine two
processes of the same order already differ by 10-50%: a single run cannot
tell an import-order effect, or a spike of convcore's own, from the
machine. Pooled over runs, a systematic effect shows; noise averages out.

    python benchmarks/network_runs.py --git 12      # the last 12 committed runs
    python benchmarks/network_runs.py a.csv b.csv   # runs' CSV files
    python benchmarks/network_runs.py --git 12 --markdown benchmarks/results/networks-runs.md

Per workload, over the runs:
- import order: torch-first / convcore-first convcore median time of each
  run; their geometric mean (the systematic effect), range, and the runs
  whose orders lie more than 10% apart (slower over faster, as each run's
  own summary measures the issue's target);
- spikes: p95/median of each run and order, convcore's and PyTorch's
  (measured in the same rounds): their median, and the cells above 1.25.

Both compare within a run, so runs of different commits pool; the
convcore / PyTorch ratio itself changes with the code and is left to each
run's own report.
"""
import argparse
import csv
import io
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = "benchmarks/results/networks.csv"
P95_TARGET, ORDER_TARGET = 1.25, 0.10


def committed_runs(count, path=RESULT):
    """[(commit, rows)] of the last `count` commits that changed `path`."""
    hashes = subprocess.run(["git", "log", f"-{count}", "--format=%h", "--", path], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.split()
    runs = []
    for h in hashes:
        text = subprocess.run(["git", "show", f"{h}:{path}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        runs.append((h, list(csv.DictReader(io.StringIO(text)))))
    return runs


def file_runs(paths):
    runs = []
    for p in paths:
        with open(p, newline="") as f:
            runs.append((os.path.basename(p), list(csv.DictReader(f))))
    return runs


def pool(runs):
    """{(label, workload): {"order": [...], "cc_p95": [...], "torch_p95": [...]}},
    a value per run (order) or per run and order (p95s)."""
    out = defaultdict(lambda: defaultdict(list))
    for _, rows in runs:
        by_order = defaultdict(dict)
        for r in rows:
            key = (r["label"], r["workload"])
            by_order[key][r["order"]] = float(r["convcore_median_ms"])
            out[key]["cc_p95"].append(float(r["convcore_p95_over_median"]))
            if r.get("torch_p95_over_median"):
                out[key]["torch_p95"].append(float(r["torch_p95_over_median"]))
        for key, med in by_order.items():
            if "torch-first" in med and "convcore-first" in med:
                out[key]["order"].append(med["torch-first"] / med["convcore-first"])
    return out


def _above(values, limit):
    return f"{sum(v > limit for v in values)}/{len(values)}"


def report_lines(runs):
    pooled = pool(runs)
    lines = [f"# Whole networks over {len(runs)} runs of benchmarks/networks.py", "",
             "runs: " + ", ".join(name for name, _ in runs), "",
             "Both tables compare within a run (the same code in both import orders; "
             "convcore and PyTorch in the same rounds), so runs of different commits pool. "
             "A systematic import-order effect shows as a geometric mean away from 1; "
             "noise as a wide range around it.", "",
             "## Import order (torch-first / convcore-first, convcore's median time per run)",
             "",
             "| network | workload | geometric mean | range | runs with the orders > 10% apart |",
             "|---|---|---|---|---|"]
    for (label, w), d in pooled.items():
        o = d["order"]
        if o:
            lines.append(f"| {label} | {w} | {np.exp(np.mean(np.log(o))):.3f} | "
                         f"{min(o):.2f}-{max(o):.2f} | "
                         f"{sum(max(v, 1 / v) - 1 > ORDER_TARGET + 1e-9 for v in o)}/{len(o)} |")
    lines += ["", "## Spikes (p95 / median per run and order; PyTorch from the same rounds)", "",
              "| network | workload | convcore median | convcore cells > 1.25 | "
              "PyTorch median | PyTorch cells > 1.25 |", "|---|---|---|---|---|---|"]
    for (label, w), d in pooled.items():
        cc, tt = d["cc_p95"], d["torch_p95"]
        lines.append(f"| {label} | {w} | {np.median(cc):.2f} | {_above(cc, P95_TARGET)} | "
                     + (f"{np.median(tt):.2f} | {_above(tt, P95_TARGET)} |" if tt else "- | - |"))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="*", help="CSV files of runs (networks.py --csv)")
    parser.add_argument("--git", type=int, metavar="N",
                        help=f"the last N committed versions of {RESULT}")
    parser.add_argument("--markdown", metavar="PATH", help="write the report there too")
    args = parser.parse_args(argv)
    if not args.csv and not args.git:
        parser.error("give CSV files or --git N")
    if args.git is not None and args.git < 1:
        parser.error(f"--git must be at least 1, got {args.git}")
    runs = (committed_runs(args.git) if args.git else []) + file_runs(args.csv)
    text = "\n".join(report_lines(runs)) + "\n"
    sys.stdout.write(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
