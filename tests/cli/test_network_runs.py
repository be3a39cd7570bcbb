"""benchmarks/network_runs.py: runs of the network benchmark pooled."""
import csv
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location(
    "network_runs", os.path.join(ROOT, "benchmarks", "network_runs.py"))
network_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(network_runs)

FIELDS = ["network", "label", "workload", "order", "convcore_median_ms",
          "convcore_p95_over_median", "torch_p95_over_median"]


def _run(path, tf_ms, cf_ms, p95s):
    """A run's CSV: one workload in both orders."""
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, FIELDS)
        out.writeheader()
        for order, ms, p95 in (("torch-first", tf_ms, p95s[0]), ("convcore-first", cf_ms, p95s[1])):
            out.writerow({"network": "resnet18", "label": "ResNet-18", "workload": "train",
                          "order": order, "convcore_median_ms": ms,
                          "convcore_p95_over_median": p95, "torch_p95_over_median": 1.1})
    return str(path)


def test_pools_the_order_ratio_and_the_spikes(tmp_path, capsys):
    a = _run(tmp_path / "a.csv", 105.0, 100.0, (1.30, 1.10))   # torch-first 5% slower
    b = _run(tmp_path / "b.csv", 88.0, 100.0, (1.20, 1.40))    # convcore-first 13.6% slower
    out_md = tmp_path / "runs.md"
    assert network_runs.main([a, b, "--markdown", str(out_md)]) == 0
    text = capsys.readouterr().out
    assert out_md.read_text() == text
    order_row = next(line for line in text.splitlines()
                     if line.startswith("| ResNet-18 | train | 0.96"))
    # geometric mean of 1.05 and 0.88, their range, one run more than 10% apart
    assert order_row == "| ResNet-18 | train | 0.961 | 0.88-1.05 | 1/2 |"
    # p95/median over the four cells: median 1.25, two above 1.25
    assert "| ResNet-18 | train | 1.25 | 2/4 | 1.10 | 0/4 |" in text


def test_asks_for_runs():
    with pytest.raises(SystemExit) as e:
        network_runs.main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        network_runs.main(["--git", "0"])
