"""Regenerate benchmarks/results/: one `convcore bench` run per entry of
RUNS, each in a fresh process, writing <name>.md, <name>.csv and
<name>.png (the chart only when matplotlib is installed).

    python benchmarks/regenerate.py              # every run (long: the
                                                 # full grid and the zoo)
    python benchmarks/regenerate.py quick layers # just these
    python benchmarks/regenerate.py --list

Extra arguments after `--` go to every run (e.g. `-- --threads 4`).
Run it on an otherwise idle machine when you can: the results record the
machine, the thread count and the versions in their header.
"""
import argparse
import os
import subprocess
import sys

import importlib.util

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

# name -> (title, arguments of `convcore bench`)
RUNS = {
    "quick": ("Quick grid: 24 sampled stride/padding/dilation/kernel/groups points",
              ["--quick"]),
    "layers": ("Reference layer grid (float32, forward and fwd+bwd)",
               ["--suite", "layers"]),
    "layers-denormal": ("Reference layer grid with denormal-range weights (scale 1e-39)",
                        ["--suite", "layers", "--weight-scale", "1e-39", "--budget", "1"]),
    "layers-denormal-ftz": ("The same with denormals flushed to zero (--flush-denormal)",
                            ["--suite", "layers", "--weight-scale", "1e-39", "--flush-denormal",
                             "--budget", "1"]),
    "threads": ("Thread sweep over the reference layer grid",
                ["--suite", "layers", "--threads-sweep", "--budget", "1"]),
    "zoo": ("Layers of LeNet-5, AlexNet, VGG-16, GoogLeNet, ResNet-18 and ResNet-50",
            ["--suite", "zoo", "--budget", "1"]),
    "full": ("Full grid: stride x padding x dilation x kernel x groups", ["--full", "--budget", "1"]),
}
# Old run names still accepted: the grid was named after issue 7.
RUN_ALIASES = {"issue7": "layers", "issue7-denormal": "layers-denormal",
               "issue7-denormal-ftz": "layers-denormal-ftz"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help=f"runs to regenerate (default all: {', '.join(RUNS)})")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    parser.add_argument("--note", default="shared machine, other jobs running: expect noise",
                        help="line recorded in each report's header")
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = parser.parse_args(argv)
    args.runs = [RUN_ALIASES.get(r, r) for r in args.runs]
    if args.list:
        for name, (title, bench_args) in RUNS.items():
            print(f"{name:16} {title}\n{'':16} convcore bench {' '.join(bench_args)}")
        return 0
    unknown = [r for r in args.runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {unknown}; choose from {list(RUNS)}")
    os.makedirs(RESULTS, exist_ok=True)
    have_plot = importlib.util.find_spec("matplotlib") is not None
    status = 0
    for name in args.runs or RUNS:
        title, bench_args = RUNS[name]
        out = os.path.join(RESULTS, name)
        cmd = [sys.executable, "-m", "convcore", "bench", *bench_args, *extra,
               "--title", title, "--note", args.note,
               "--markdown", out + ".md", "--csv", out + ".csv"]
        if have_plot:
            cmd += ["--plot", out + ".png"]
        print("$ " + " ".join(cmd), file=sys.stderr)
        code = subprocess.call(cmd)
        if code:
            print(f"{name}: convcore bench exited with {code}", file=sys.stderr)
            status = status or code
    return status


if __name__ == "__main__":
    sys.exit(main())
