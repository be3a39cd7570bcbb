"""benchmarks/network_bench.py runs end to end on a tiny configuration
(convcore only, as on CI without torch) and reports both workloads."""
import os

from subprocess_helpers import run_python

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "network_bench.py")


def test_network_bench_quick_tiny_without_torch(tmp_path):
    md = tmp_path / "network.md"
    proc = run_python(
        SCRIPT, "--quick", "--no-torch", "--threads", "1",
        "--lenet-batches", "2", "--chunk", "1", "--warmup-batches", "1",
        "--resnet-steps", "1", "--resnet-warmup", "1", "--memory-steps", "1",
        "--markdown", str(md), timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "LeNet-5 epoch (extrapolated) | convcore | 61,706 |" in out
    assert "ResNet-20 step b128 | convcore | 269,722 |" in out
    assert "| torch |" not in out  # --no-torch measures convcore only
    assert "extrapolated from the median batch time" in out
    assert "peak growth (MiB)" in out
    text = md.read_text()
    assert text.startswith("# Whole-network training")
    assert "- threads: 1" in text and "ResNet-20 step b128" in text


def test_torch_mirrors_match_convcore_parameter_counts():
    import importlib.util

    import pytest
    torch = pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("network_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from convcore.models import lenet5, resnet20
    for cc_model, t_model in ((lenet5(input_size=28, rng=0), bench.torch_lenet5(torch)),
                              (resnet20(rng=0), bench.torch_resnet20(torch))):
        bench.copy_weights(torch, cc_model, t_model)
        assert bench.count_params(cc_model) == bench.count_params(t_model, True)
    # same weights -> same loss on the first batch
    x, y = bench.cifar_like(4)
    cc_loss = bench.ConvcoreTrainer(cc_model).step(x, y)
    t_loss = bench.TorchTrainer(torch, t_model).step(x, y)
    assert abs(cc_loss - t_loss) < 1e-4 * max(1.0, abs(t_loss))
