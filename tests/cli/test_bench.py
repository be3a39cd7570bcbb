"""The benchmark engine, its CLI and the autotune cache, on tiny shapes.

Nothing here asserts a timing: only that every algorithm is measured,
the outputs parse, the algorithms agree and the cache behaves."""
import csv
import json

import numpy as np
import pytest

import convcore
from convcore import cli
from convcore.algorithms import autotune
from convcore.bench import command, configs, engine, report
from convcore.cli import main
from convcore.algorithms import supported_algorithms
from convcore.functional._conv_spec import conv_spec

TINY_AXES = {"stride": (1, 2), "padding": (0, 1, "same"), "dilation": (1, 2),
             "kernel": (1, 3), "groups": ("1", "dw")}
TINY_ARGS = ["--stride", "1", "2", "--padding", "1", "same", "--kernel", "3", "--dilation", "1",
             "--groups", "1", "dw", "--batch", "2", "--channels", "4", "--size", "6",
             "--repeats", "2", "--budget", "0", "--no-progress"]
ALGOS = list(convcore.conv_algorithms())


def supported(cfg):
    """The algorithms the engine must time for a configuration, in order."""
    return [a for a in ALGOS if a in supported_algorithms(cfg.spec(np.float32))]


def tiny_configs():
    return configs.grid_configs(TINY_AXES, batch=2, channels=4, size=7, suite="grid")


def run_tiny(use_torch, cfgs=None, dtype=np.float32):
    return engine.run_benchmark(cfgs or tiny_configs(), ALGOS, dtype, [1], repeats=2,
                                budget=0, use_torch=use_torch, peak_size=64)


# --- configurations ----------------------------------------------------------

def test_grid_leaves_out_invalid_combinations():
    cfgs = tiny_configs()
    assert cfgs and all(c.is_valid() for c in cfgs)
    # 'same' needs stride 1: never generated with stride 2
    assert not any(c.padding == "same" and c.stride == 2 for c in cfgs)
    assert {c.groups for c in cfgs} == {1, 4}


def test_full_grid_and_quick_sample_cover_every_axis_value():
    full = configs.full_configs()
    assert len(full) == 240  # (4 + 3 + 3) paddings x strides, x 3 x 4 x 2
    quick = configs.quick_configs()
    assert len(quick) == 24
    for attr, values in (("stride", (1, 2, 3)), ("padding", (0, 1, 2, "same")),
                         ("dilation", (1, 2, 3)), ("R", (1, 3, 5, 7))):
        assert {getattr(c, attr) for c in quick} == set(values), attr
    assert {c.groups > 1 for c in quick} == {True, False}
    assert configs.quick_configs() == quick  # deterministic


@pytest.mark.parametrize("suite", ["layers", "lenet5", "alexnet", "vgg16",
                                   "googlenet", "resnet18", "resnet50"])
def test_layer_suites_are_valid_real_shapes(suite):
    cfgs = configs.suite_configs(suite)
    assert cfgs and all(c.is_valid() for c in cfgs)
    assert all(c.name.startswith(suite + ".") for c in cfgs)


def test_layer_grid_has_its_nine_layers():
    cfgs = configs.suite_configs("layers")
    assert len(cfgs) == 9
    alexnet = cfgs[7]
    assert (alexnet.N, alexnet.C, alexnet.H, alexnet.K, alexnet.R, alexnet.stride) == \
        (8, 3, 227, 96, 11, 4)
    assert cfgs[7].spec(np.float32).OH == 55
    depthwise = cfgs[8]
    assert depthwise.params()["depthwise"] and depthwise.groups == 128
    assert configs.suite_configs("layers", batch=2)[0].N == 2


def test_old_suite_name_issue7_still_works_but_is_not_advertised(capsys):
    assert configs.suite_configs("issue7") == configs.suite_configs("layers")
    args = cli.build_parser().parse_args(["bench", "--suite", "issue7"])
    assert args.suite == "layers"
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert "issue7" not in capsys.readouterr().out


def test_network_output_sizes():
    # ResNet-18 conv1 224 -> 112, stride-2 3x3 56 -> 28; VGG keeps its size.
    r18 = {c.name: c.spec(np.float32) for c in configs.suite_configs("resnet18")}
    assert r18["resnet18.conv1"].OH == 112
    assert r18["resnet18.layer2.0.3x3s2"].OH == 28
    assert r18["resnet18.layer2.0.ds"].OH == 28
    vgg = configs.suite_configs("vgg16")
    assert all(c.spec(np.float32).OH == c.H for c in vgg)
    assert sum(c.count for c in vgg) == 13


def test_unknown_suite_is_refused():
    with pytest.raises(ValueError, match="unknown suite"):
        configs.suite_configs("lenet6")


# --- engine ------------------------------------------------------------------

def test_engine_measures_every_algorithm_and_they_agree():
    cfgs = tiny_configs()
    result = run_tiny(use_torch=False, cfgs=cfgs)
    rows = result["rows"]
    assert not result["skipped"]
    assert len(rows) == sum(len(supported(c)) for c in cfgs)
    assert any("winograd" in supported(c) for c in cfgs)
    for cfg in cfgs:
        mine = [r for r in rows if r["name"] == cfg.name]
        assert [r["impl"] for r in mine] == supported(cfg)
    for r in rows:
        assert r["agree"], (r["name"], r["impl"], r["max_rel_diff"])
        for p in engine.PASSES:
            assert r[f"{p}_ms"] > 0 and r[f"{p}_gflops"] > 0
            assert len(r["times_s"][p]) >= 2
        assert r["flops"] == conv_spec(
            (r["N"], r["C"], r["H"], r["W"]), (r["K"], r["C"] // r["groups"], r["R"], r["S"]),
            np.float32, r["stride"], r["padding"], r["dilation"], r["groups"]).flops()
        assert r["peak_share_fwd"] == pytest.approx(r["fwd_gflops"] / result["peaks"][1])
    # the peak is the higher of the measurements at the start and the end
    assert result["peaks"][1] == max(result["peak_samples"][1])
    auto = [r for r in rows if r["impl"] == "auto"]
    assert all(r["auto_choice"] in ALGOS and r["auto_vs_best_fwd_bwd"] > 0 for r in auto)
    summary = engine.summarize(rows)
    assert 0 <= summary["auto"]["within10_fwd_bwd"] <= 1
    assert all(e["all_agree"] for e in summary["impls"].values())


def test_engine_float64_and_forward_only():
    cfgs = tiny_configs()[:2]
    rows = engine.run_benchmark(cfgs, ["direct", "im2col"], np.float64, [1], repeats=1,
                                budget=0, use_torch=False, backward=False, peak_size=32)["rows"]
    assert len(rows) == 4 and all(r["agree"] and r["dtype"] == "float64" for r in rows)
    assert all(r["bwd_data_ms"] is None and r["fwd_bwd_ms"] is None for r in rows)


def test_scratch_bytes_of_the_builtin_algorithms():
    config = configs.BenchConfig("c", 2, 4, 8, 8, 6, 3, 3, padding=1)
    spec = config.spec(np.float32)
    assert engine.scratch_bytes("direct", config.spec(np.float64), False) == 0
    # float32's blocked kernel: padded planes (10 rows) per thread, packed weights
    assert engine.scratch_bytes("direct", spec, False) >= 4 * 10 * 10 * 4 + 6 * 4 * 9 * 4
    im2col = engine.scratch_bytes("im2col", spec, False)
    assert im2col >= 4 * 9 * 8 * 8 * 4  # one column buffer: C*R*S x OH*OW floats
    pointwise = configs.BenchConfig("p", 2, 4, 8, 8, 6, 1, 1).spec(np.float32)
    assert engine.scratch_bytes("im2col", pointwise, False) == 0


def test_engine_against_torch():
    pytest.importorskip("torch")
    cfgs = tiny_configs()[:4]
    rows = run_tiny(use_torch=True, cfgs=cfgs)["rows"]
    torch_rows = [r for r in rows if r["impl"] == "torch"]
    # 'same' padding is symmetric for odd kernels, so torch runs everywhere
    assert len(torch_rows) == len(cfgs)
    assert all(r["agree"] for r in rows)
    assert all(r["vs_torch_fwd"] > 0 and r["vs_torch_fwd_bwd"] > 0
               for r in rows if r["impl"] != "torch")


def test_markdown_has_the_versus_torch_table(tmp_path):
    pytest.importorskip("torch")
    result = run_tiny(use_torch=True, cfgs=tiny_configs()[:2])
    result["dtype"] = "float32"
    meta = report.machine_info([1], result["torch"])
    report.to_markdown(tmp_path / "r.md", meta, result, engine.summarize(result["rows"]))
    md = (tmp_path / "r.md").read_text()
    assert "## convcore (auto) vs PyTorch" in md
    section = md.split("## convcore (auto) vs PyTorch")[1].split("## Results")[0]
    assert sum(line.startswith("| k") for line in section.splitlines()) == 2


def test_peak_is_measured_with_the_kernels_blas():
    assert engine.measure_peak(np.float32, 1, size=64, repeats=1) > 0
    assert engine.measure_peak(np.float64, 1, size=64, repeats=1) > 0


# --- CLI and output files ------------------------------------------------------

def test_cli_writes_json_csv_markdown(tmp_path, capsys):
    paths = {ext: tmp_path / f"out.{ext}" for ext in ("json", "csv", "md")}
    code = main(["bench", *TINY_ARGS, "--no-torch", "--json", str(paths["json"]),
                 "--csv", str(paths["csv"]), "--markdown", str(paths["md"])])
    assert code == 0
    out = capsys.readouterr().out
    assert "fwd ms" in out and "auto within 10%" in out
    # stride 1: pads 1 and same; stride 2: pad 1 only -> 3 x 2 groups; each
    # runs direct, im2col and auto, and the four stride-1 ones winograd too.
    n_rows = 6 * 3 + 4
    data = json.loads(paths["json"].read_text())
    assert data["meta"]["threads"] == [convcore.get_num_threads()]
    assert len(data["results"]) == n_rows
    assert {r["impl"] for r in data["results"]} == set(ALGOS)
    assert all(r["agree"] is True for r in data["results"])
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_rows
    assert all(r["agree"] == "True" for r in rows)
    assert all(float(r["fwd_ms"]) > 0 for r in rows)
    md = paths["md"].read_text()
    assert md.startswith("# convcore benchmark") and "- threads:" in md
    assert md.count("| auto:") == 6  # one per configuration


def test_cli_threads_sweep(capsys):
    code = main(["bench", "--kernel", "3", "--stride", "1", "--padding", "1",
                 "--dilation", "1", "--groups", "1", "--batch", "1", "--channels", "2",
                 "--size", "5", "--threads", "2", "--threads-sweep", "--repeats", "1",
                 "--budget", "0", "--no-torch", "--no-progress", "--algorithms", "direct"])
    assert code == 0
    out = capsys.readouterr().out
    assert "thr" in out and "1 thread:" in out and "2 threads:" in out


@pytest.mark.parametrize("argv", [
    ["bench", "--bogus"],
    ["bench", "--threads", "0"],
    ["bench", "--quick", "--full"],
    ["bench", "--padding", "-1"],
    ["bench", "--algorithms", "winograd9"],
    ["bench", "--suite", "nope"],
    ["bench", "--dtype", "float16"],
])
def test_cli_bad_flags_print_usage_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_cli_grid_flags_with_a_suite_are_refused(capsys):
    assert main(["bench", "--suite", "lenet5", "--kernel", "3"]) == 2
    assert "--kernel" in capsys.readouterr().err


def test_cli_plot_without_matplotlib_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(report, "have_matplotlib", lambda: False)
    code = main(["bench", *TINY_ARGS, "--no-torch", "--plot", str(tmp_path / "x.png")])
    assert code == 2
    assert "needs matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    rows = run_tiny(use_torch=False)["rows"]
    report.to_png(tmp_path / "grid.png", rows)
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_select_configs_defaults_to_quick():
    parser = __import__("argparse").ArgumentParser()
    command.add_arguments(parser)
    preset, cfgs = command.select_configs(parser.parse_args([]))
    assert preset == "quick" and len(cfgs) == 24
    preset, cfgs = command.select_configs(parser.parse_args(["--suite", "alexnet", "--batch", "1"]))
    assert preset == "alexnet" and len(cfgs) == 5 and cfgs[0].N == 1


# --- autotune ------------------------------------------------------------------

@pytest.fixture
def tune_env(tmp_path, monkeypatch):
    """Autotune on, its cache in a temporary XDG cache directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CONVCORE_CACHE_DIR", raising=False)
    monkeypatch.setenv("CONVCORE_AUTOTUNE", "1")
    autotune.clear_memory()
    yield tmp_path / "convcore" / "autotune.json"
    autotune.clear_memory()


def small_spec(**kw):
    params = dict(stride=1, padding=1, dilation=1, groups=1)
    params.update(kw)
    return conv_spec((2, 4, 6, 6), (4, 4 // params["groups"], 3, 3), np.dtype(np.float32),
                     params["stride"], params["padding"], params["dilation"], params["groups"])


def test_autotune_off_by_default(monkeypatch):
    monkeypatch.delenv("CONVCORE_AUTOTUNE", raising=False)
    assert autotune.measured_choice(small_spec()) is None


def test_autotune_cache_roundtrip(tune_env, monkeypatch):
    spec = small_spec()
    winner = autotune.measured_choice(spec)
    assert winner in autotune.candidates(spec)
    data = json.loads(tune_env.read_text())
    entry = data["entries"][autotune.cache_key(spec)]
    assert entry["winner"] == winner
    assert set(entry["seconds"]) == set(autotune.candidates(spec))

    # A new process (memory cleared) reads the file and times nothing.
    autotune.clear_memory()

    def no_timing(*a, **k):
        raise AssertionError("timed a shape that is in the cache")
    monkeypatch.setattr(autotune, "time_algorithms", no_timing)
    assert autotune.measured_choice(spec) == winner
    assert autotune.lookup(spec) == winner
    # Another thread count is another key: not in the cache.
    assert autotune.lookup(spec, threads=autotune._threads.get_num_threads() + 1) is None


def test_autotune_key_separates_parameters():
    keys = {autotune.cache_key(small_spec(**kw), threads=1)
            for kw in ({}, {"stride": 2}, {"padding": 0}, {"dilation": 2}, {"groups": 2})}
    assert len(keys) == 5
    s32 = small_spec()
    s64 = conv_spec((2, 4, 6, 6), (4, 4, 3, 3), np.dtype(np.float64), 1, 1, 1, 1)
    assert autotune.cache_key(s32, 1) != autotune.cache_key(s64, 1)
    assert autotune.cache_key(s32, 1) != autotune.cache_key(s32, 2)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"format": 99, "entries": {}}'])
def test_autotune_corrupt_cache_is_ignored_with_a_warning(tune_env, content):
    tune_env.parent.mkdir(parents=True)
    tune_env.write_text(content)
    spec = small_spec()
    with pytest.warns(RuntimeWarning, match="corrupt cache"):
        winner = autotune.measured_choice(spec)
    assert winner in autotune.candidates(spec)
    data = json.loads(tune_env.read_text())  # rewritten, valid
    assert data["entries"][autotune.cache_key(spec)]["winner"] == winner


def test_tune_explicit_shapes_and_cache_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVCORE_CACHE_DIR", str(tmp_path / "cc"))
    monkeypatch.delenv("CONVCORE_AUTOTUNE", raising=False)  # tune() works regardless
    autotune.clear_memory()
    try:
        winner = autotune.tune((2, 4, 6, 6), (4, 1, 3, 3), padding="same", groups=4)
        assert winner in ALGOS
        assert (tmp_path / "cc" / "autotune.json").exists()
        with pytest.raises(ValueError, match="groups"):
            autotune.tune((2, 4, 6, 6), (4, 4, 3, 3), groups=3)
    finally:
        autotune.clear_memory()


def test_auto_uses_the_measured_winner(tune_env, monkeypatch):
    """The hook in select_algorithm: with autotuning on, "auto" runs what
    the measurement chose, even where the heuristic would choose otherwise."""
    from convcore.algorithms import select_algorithm
    spec = small_spec()
    monkeypatch.delenv("CONVCORE_AUTOTUNE")
    heuristic = select_algorithm(spec).name
    forced = next(a for a in autotune.candidates(spec) if a != heuristic)
    monkeypatch.setattr(autotune, "time_algorithms",
                        lambda spec, names, *a, **k: {n: (0.0 if n == forced else 1.0) for n in names})
    monkeypatch.setenv("CONVCORE_AUTOTUNE", "1")
    assert select_algorithm(spec).name == forced
