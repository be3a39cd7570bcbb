"""Whole networks, convcore against PyTorch: writes benchmarks/results/networks.md
and networks.csv; with --quick networks-quick.md/.csv, and for a part of
the suite or other shapes (--networks, --workloads, --orders, --input-size,
--train-batch) networks-subset.md/.csv, so that only a full run replaces
the committed full results. --markdown/--csv choose other paths.

    python benchmarks/networks.py                      # full suite, ~15 minutes
    python benchmarks/networks.py --quick              # subset, fewer rounds
    python benchmarks/networks.py --networks resnet18 mobilenet_v2 --workloads train
    python benchmarks/networks.py --profile mobilenet_v2   # step share by layer type

Every option of `convcore bench --suite networks` is accepted (see
`convcore bench --help`, section "networks suite"); this script only adds
the default output paths and threads=2. What is measured and how:
convcore/bench/networks.py.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:  # an installed convcore (or one on PYTHONPATH) comes first ...
    import convcore  # noqa: F401
except ImportError:  # ... else the checkout's in-place build
    sys.path.insert(0, ROOT)
from convcore.cli import main  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
# Options that measure a part of the suite or other shapes than its own.
SUBSET_OPTIONS = ("--networks", "--workloads", "--orders", "--input-size", "--train-batch")


def _given(argv, flag):
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def build_argv(argv):
    """`convcore bench` arguments: the suite, 2 threads and the result files
    unless given."""
    out = ["bench", "--suite", "networks"] + list(argv)
    if "-h" in argv or "--help" in argv:
        return out
    if not _given(argv, "--threads"):
        out += ["--threads", "2"]
    if _given(argv, "--profile"):
        return out
    if _given(argv, "--quick"):
        stem = "networks-quick"
    elif any(_given(argv, flag) for flag in SUBSET_OPTIONS):
        stem = "networks-subset"
    else:
        stem = "networks"
    if not _given(argv, "--markdown"):
        out += ["--markdown", os.path.join(RESULTS, stem + ".md")]
    if not _given(argv, "--csv"):
        out += ["--csv", os.path.join(RESULTS, stem + ".csv")]
    return out


if __name__ == "__main__":
    os.makedirs(RESULTS, exist_ok=True)
    sys.exit(main(build_argv(sys.argv[1:])))
