"""benchmarks/networks.py: the network benchmark's default result files."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _networks_script():
    spec = importlib.util.spec_from_file_location(
        "networks_script", os.path.join(ROOT, "benchmarks", "networks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, stem", [
    ([], "networks"),
    (["--replicates", "3"], "networks"),
    (["--quick"], "networks-quick"),
    (["--quick", "--networks", "lenet5"], "networks-quick"),
    (["--networks", "resnet20"], "networks-subset"),
    (["--workloads=train"], "networks-subset"),
    (["--orders", "in-process"], "networks-subset"),
    (["--input-size", "160", "--train-batch", "8"], "networks-subset"),
])
def test_only_a_full_run_writes_the_committed_network_results(argv, stem):
    # a part of the suite once replaced the committed full results
    script = _networks_script()
    out = script.build_argv(argv)
    assert out[out.index("--markdown") + 1] == os.path.join(script.RESULTS, stem + ".md")
    assert out[out.index("--csv") + 1] == os.path.join(script.RESULTS, stem + ".csv")
    assert out[out.index("--threads") + 1] == "2"


def test_given_result_paths_are_kept():
    out = _networks_script().build_argv(["--networks", "lenet5", "--csv", "/tmp/x.csv"])
    assert out.count("--csv") == 1 and out[out.index("--csv") + 1] == "/tmp/x.csv"
    assert out[out.index("--markdown") + 1].endswith("networks-subset.md")
