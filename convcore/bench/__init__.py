"""`convcore bench` (floor 5): which convolution algorithm wins where.

    command.py   argument parsing, output files      convcore bench --help
        |
    configs.py   BenchConfig, parameter grids (--quick, --full), real
        |        network layers (LeNet-5 ... ResNet-50), the reference layer grid
    engine.py    warm-up, interleaved repeats, GEMM peak, PyTorch peer,
        |        agreement check, auto-vs-best, summaries
    report.py    text table, JSON, CSV, Markdown, PNG
    networks.py  --suite networks: whole zoo networks against a PyTorch
                 mirror (to_torch), both import orders in fresh processes
                 taking turns (turns.py: timing in turns);
                 --profile NET: a training step's share by layer type

Used from Python:

    from convcore.bench import run_benchmark, suite_configs
    result = run_benchmark(suite_configs("layers"), threads_list=[2])
"""
from convcore.bench.command import add_arguments, run
from convcore.bench.configs import BenchConfig, grid_configs, sample_configs, suite_configs
from convcore.bench.engine import measure_config, measure_peak, run_benchmark, summarize

__all__ = ["add_arguments", "run", "BenchConfig", "grid_configs", "sample_configs",
           "suite_configs", "measure_config", "measure_peak", "run_benchmark", "summarize"]
