"""`convcore bench --suite networks`: the torch mirror of every zoo network
computes convcore's function (float64, train and eval, gradients), the
suite runs end to end on LeNet-5 in a fresh process and writes its
reports, the profile accounts for the step, and the summary arithmetic.
The PyTorch parts are skipped when torch is not installed."""
import csv
import json

import numpy as np
import pytest

import convcore
from convcore import nn
from convcore.bench import networks
from convcore.cli import main


@pytest.fixture(autouse=True)
def one_thread():
    previous = convcore.set_num_threads(1)
    yield
    convcore.set_num_threads(previous)


def _have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- torch mirror

@pytest.mark.parametrize("name", list(networks.NETWORKS))
def test_to_torch_mirrors_every_network_in_float64(name, rng):
    torch = pytest.importorskip("torch")
    spec = networks.NETWORKS[name]
    size = 64 if spec.input_shape[1] > 64 else None
    model, shape = networks.build_model(spec, "float64", size, seed=5)
    tmodel = networks.to_torch(model, torch)
    networks.copy_weights(model, tmodel, torch)
    assert sum(p.data.size for p in model.parameters()) == \
        sum(p.numel() for p in tmodel.parameters())
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first.first_layer = False
    networks._set_dropout(model, tmodel, False)
    x = rng.standard_normal((3,) + shape)
    g = rng.standard_normal((3, spec.num_classes))
    y = model(x)
    gx = model.backward(g)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = tmodel(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-12)
    tgx = tx.grad.numpy()
    np.testing.assert_allclose(gx, tgx, rtol=1e-8, atol=1e-10 * np.max(np.abs(tgx)))
    assert networks._grad_rel_diff(model, tmodel) < 1e-9
    model.eval()
    tmodel.eval()
    with convcore.no_grad():
        y = model(x)
    with torch.no_grad():
        ty = tmodel(torch.from_numpy(x))
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-9, atol=1e-12)


def test_to_torch_never_runs_a_relu_in_place_on_a_shared_input(rng):
    """A body starting with ReLU reads the block's input, which the
    shortcut reads too: an in-place ReLU there would change the sum."""
    torch = pytest.importorskip("torch")
    block = nn.Sequential(
        nn.Conv2d(2, 2, 3, padding=1, dtype=np.float64, rng=0),
        nn.Residual(nn.Sequential(nn.ReLU(), nn.Conv2d(2, 2, 1, dtype=np.float64, rng=1))),
        nn.Conv2d(2, 2, 1, dtype=np.float64, rng=2), nn.ReLU())
    tblock = networks.to_torch(block, torch)
    networks.copy_weights(block, tblock, torch)
    assert tblock[1].body[0].inplace is False       # first in its body: shared input
    assert tblock[3].inplace is True                 # after a conv's fresh output
    x = rng.standard_normal((2, 2, 5, 5))
    with torch.no_grad():
        ty = tblock(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(block(x), ty, rtol=1e-12, atol=1e-14)


def test_to_torch_refuses_what_it_cannot_mirror():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="GroupNorm"):
        networks.to_torch(nn.Sequential(nn.GroupNorm(2, 4)), torch)


# ---------------------------------------------------------------- the suite

def test_suite_runs_lenet_in_a_fresh_process(tmp_path, capsys):
    md, out_csv, js = tmp_path / "n.md", tmp_path / "n.csv", tmp_path / "n.json"
    torch = _have_torch()
    code = main(["bench", "--suite", "networks", "--networks", "lenet5", "--orders",
                 "convcore-first", "--repeats", "2", "--budget", "0", "--train-batch", "8",
                 "--threads", "1", "--no-progress", "--markdown", str(md), "--csv", str(out_csv),
                 "--json", str(js)])
    assert code == 0
    out = capsys.readouterr().out
    assert "eval_b1" in out and "eval_b16" in out and "train" in out
    rows = list(csv.DictReader(open(out_csv)))
    assert [r["workload"] for r in rows] == ["eval_b1", "eval_b16", "train"]
    assert [int(r["batch"]) for r in rows] == [1, 16, 8]
    data = json.load(open(js))
    for r in data["rows"]:
        assert r["rounds"] >= 2 and r["threads"] == 1
        assert 0 < r["convcore_median_ms"] <= r["convcore_p95_ms"]
        assert len(r["samples_s"]["convcore"]) == r["rounds"]
    text = md.read_text()
    assert text.startswith("# Whole networks: convcore vs PyTorch")
    assert "## All measurements" in text and "| LeNet-5 | eval_b1 |" in text
    # the machine's memory bandwidth and GEMM peak, at the start and the end
    state = data["meta"]["machine_state"]
    for when in ("start", "end"):
        assert 0.1 < state[when]["copy_gbs"] < 1000 and 0.1 < state[when]["sgemm_gflops"] < 1e5
    assert "- the machine at the start / end of the run: memory copy " in text
    if torch:
        assert rows[0]["order"] == "convcore-first"
        for r in data["rows"]:
            assert r["agree"] is True
            assert r["ratio"] == pytest.approx(r["convcore_median_ms"] / r["torch_median_ms"])
        ev, tr = data["rows"][0], data["rows"][2]
        assert ev["rel_diff"] < 1e-5                     # same weights, float32
        assert abs(tr["loss"] - tr["torch_loss"]) < 1e-5 * max(1, abs(tr["loss"]))
        assert tr["grad_rel_diff"] < 1e-3
        assert "## convcore / PyTorch by import order" in text
    else:
        assert rows[0]["order"] == "in-process" and "torch_median_ms" not in rows[0]


def test_suite_without_torch_measures_convcore_alone(capsys):
    code = main(["bench", "--suite", "networks", "--networks", "lenet5", "--workloads",
                 "eval_b1", "--no-torch", "--repeats", "1", "--budget", "0", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "in-process" in out and "torch med ms" not in out


def test_suite_when_torch_is_not_installed(monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    code = main(["bench", "--suite", "networks", "--networks", "lenet5", "--workloads",
                 "eval_b1", "--repeats", "1", "--budget", "0", "--no-progress"])
    assert code == 0
    captured = capsys.readouterr()
    assert "in-process" in captured.out and "torch med ms" not in captured.out
    assert "PyTorch is not installed" in captured.err


@pytest.mark.parametrize("argv", [
    ["bench", "--quick", "--suite", "lenet5"],
    ["bench", "--quick", "--full"],
    ["bench", "--networks", "lenet5"],
    ["bench", "--suite", "networks", "--kernel", "3"],
    ["bench", "--suite", "networks", "--networks", "alexnet9"],
    ["bench", "--suite", "networks", "--workloads", "eval_b2"],
])
def test_bad_combinations_print_usage_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_profile_accounts_for_every_layer_type(capsys):
    prof = networks.profile_step(networks.NETWORKS["lenet5"], steps=2, train_batch=4)
    names = [k for k, _, _, _ in prof["rows"]]
    for layer in ("Conv2d 5x5", "Tanh", "AvgPool2d", "Linear", "Flatten", "CrossEntropyLoss",
                  "SGD.step (momentum)", "Sequential (own)"):
        assert layer in names, layer
    assert all(min(r[1:]) >= 0 for r in prof["rows"])
    conv = next(r for r in prof["rows"] if r[0] == "Conv2d 5x5")
    assert conv[1] > 0 and conv[2] > 0 and conv[3] == 0
    step = next(r for r in prof["rows"] if r[0] == "SGD.step (momentum)")
    assert step[1] == step[2] == 0 and step[3] > 0
    assert sum(sum(r[1:]) for r in prof["rows"]) <= prof["wrapped_ms"] * 1.001
    assert main(["bench", "--profile", "resnet20", "--profile-steps", "1", "--train-batch",
                 "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "Conv2d 3x3" in out and "BatchNorm2d" in out and "ResidualReLU (own)" in out
    assert "share" in out


def test_mobilenet_profile_names_depthwise_convolutions():
    prof = networks.profile_step(networks.NETWORKS["mobilenet_v2"], steps=1, train_batch=2,
                                 input_size=32)
    names = {r[0] for r in prof["rows"]}
    assert {"Conv2d depthwise 3x3", "Conv2d depthwise 3x3/2", "Conv2d 1x1",
            "BatchNorm2d + ReLU6 (fused)", "InvertedResidual (own)"} <= names


def test_the_profile_times_the_fused_step_and_puts_the_classes_back():
    from convcore import nn
    from convcore.nn import _fusion
    before = {(c, a): c.__dict__.get(a) for c in (nn.Conv2d, nn.BatchNorm2d, nn.ReLU,
                                                 _fusion.Step, _fusion.ResidualThenReLU)
              for a in ("forward", "backward", "__call__")}
    conv_forward = _fusion._conv_forward
    prof = networks.profile_step(networks.NETWORKS["resnet20"], steps=1, train_batch=2)
    names = {r[0] for r in prof["rows"]}
    # the batch norms run fused with their ReLU, the convolutions on rows of their own
    assert "BatchNorm2d + ReLU (fused)" in names and "Conv2d 3x3" in names
    assert "ReLU" not in names and "BatchNorm2d" not in names
    fused = next(r for r in prof["rows"] if r[0] == "BatchNorm2d + ReLU (fused)")
    assert fused[1] > 0 and fused[2] > 0
    assert {k: k[0].__dict__.get(k[1]) for k in before} == before
    assert _fusion._conv_forward is conv_forward


# ---------------------------------------------------------------- arithmetic

def test_summary_numbers():
    def row(order, label, w, cc, t, p95):
        return {"order": order, "label": label, "workload": w, "convcore_median_ms": cc,
                "ratio": cc / t, "convcore_p95_over_median": p95, "agree": True}
    rows = [row("torch-first", "A", "train", 10, 20, 1.1), row("convcore-first", "A", "train",
                                                                 12, 20, 1.4),
            row("torch-first", "B", "eval_b1", 30, 20, 1.0),
            row("convcore-first", "B", "eval_b1", 30, 20, 1.2)]
    s = networks.summarize(rows)
    assert s["median_ratio"] == pytest.approx(np.median([0.5, 0.6, 1.5, 1.5]))
    assert s["max_ratio"] == 1.5 and s["share_at_most_0.9"] == 0.5
    assert s["by_order"] == {"torch-first": 1.0, "convcore-first": 1.05}
    assert s["max_p95_over_median"] == 1.4 and s["max_p95_over_median_at"] == \
        "A train (convcore-first)"
    assert s["p95_over_median_above_target"] == 1 and s["workloads"] == 4
    assert "torch_median_p95_over_median" not in s     # no PyTorch p95 in these rows
    assert s["max_order_gap"] == pytest.approx(0.2) and s["max_order_gap_at"] == "A train"
    assert s["max_order_gap_vs_torch"] == pytest.approx(0.2)
    assert s["all_agree"] is True


def test_order_gap_against_torch_cancels_a_slower_process():
    # the convcore-first process ran while the machine was 30% slower:
    # both libraries took 1.3x as long there
    rows = [{"order": "torch-first", "label": "A", "workload": "train",
             "convcore_median_ms": 10.0, "ratio": 0.5, "convcore_p95_over_median": 1.0},
            {"order": "convcore-first", "label": "A", "workload": "train",
             "convcore_median_ms": 13.0, "ratio": 13.0 / 26.0, "convcore_p95_over_median": 1.0}]
    s = networks.summarize(rows)
    assert s["max_order_gap"] == pytest.approx(0.3)
    assert s["max_order_gap_vs_torch"] == pytest.approx(0.0)
    assert any("differs by at most 0%" in line for line in networks.summary_lines(s))


def test_each_network_runs_its_orders_together_taking_turns_at_opening(monkeypatch):
    calls = []

    def fake_run_orders(plan, processes, on_workload=None):
        calls.append((plan["networks"], processes, plan["first_seed"]))
        return [{"rows": [], "torch": "x"} for _ in processes]
    monkeypatch.setattr(networks, "run_orders", fake_run_orders)
    plan = {"networks": ["lenet5", "resnet20", "resnet18"], "workloads": ["train"],
            "orders": ["torch-first", "convcore-first"], "progress": False, "budget": 6.0}
    assert len(list(networks._results(plan))) == 6
    t, c = "torch-first", "convcore-first"
    assert calls == [(["lenet5"], [(t, 0), (c, 0)], 0), (["resnet20"], [(c, 0), (t, 0)], 1),
                     (["resnet18"], [(t, 0), (c, 0)], 2)]


def test_replicated_processes_take_turns_a_b_b_a_with_the_budget_shared(monkeypatch):
    calls = []

    def fake_run_orders(plan, processes, on_workload=None):
        calls.append((plan["networks"][0], processes, plan["budget"]))
        return [{"rows": [{"network": plan["networks"][0], "order": o, "replicate": r}],
                 "torch": "x"} for o, r in processes]
    monkeypatch.setattr(networks, "run_orders", fake_run_orders)
    plan = {"networks": ["lenet5", "resnet20"], "workloads": ["train"],
            "orders": ["torch-first", "convcore-first"], "progress": False, "replicates": 2,
            "budget": 6.0}
    results = list(networks._results(plan))
    t, c = "torch-first", "convcore-first"
    assert calls == [("lenet5", [(t, 0), (c, 0), (c, 1), (t, 1)], 3.0),
                     ("resnet20", [(c, 0), (t, 0), (t, 1), (c, 1)], 3.0)]
    assert [r["rows"][0]["replicate"] for r in results] == [0, 0, 1, 1, 0, 0, 1, 1]


def test_processes_measure_in_turns_and_report_their_rows():
    plan = {"networks": ["lenet5"], "workloads": ["eval_b1", "train"], "threads": 1,
            "repeats": 2, "budget": 0.05, "min_time": 2e-4, "dtype": "float32",
            "train_batch": 2, "input_size": None, "use_torch": False, "first_seed": 0}
    done = []
    # (convcore first in both: torch need not be installed)
    results = networks.run_orders(plan, [("convcore-first", 0), ("convcore-first", 1)],
                                  on_workload=done.append)
    assert done == [0, 1]
    rows = [r for res in results for r in res["rows"]]
    assert [(r["replicate"], r["workload"]) for r in rows] == [
        (0, "eval_b1"), (0, "train"), (1, "eval_b1"), (1, "train")]
    assert all(r["rounds"] >= 2 and r["order"] == "convcore-first" for r in rows)
    # eval calls are short: every block opened with a call timed apart
    assert all(r["convcore_cold_over_median"] > 0 for r in rows if r["workload"] == "eval_b1")


def test_replicates_merge_pooled_with_the_worst_agreement_and_their_gap():
    def row(order, rep, cc, torch, rel, agree):
        r = {"network": "n", "label": "N", "workload": "train", "order": order,
             "replicate": rep, "rel_diff": rel, "agree": agree}
        networks._set_stats(r, {"convcore": cc, "torch": torch})
        return r
    a = row("torch-first", 0, [1.0, 1.0, 1.0, 2.0], [2.0] * 4, 1e-6, True)
    b = row("torch-first", 1, [1.5, 1.5, 1.5, 1.5], [2.0] * 4, 3e-6, False)
    c = row("convcore-first", 0, [1.2] * 3, [2.4] * 3, 1e-6, True)
    merged = networks.merge_replicates([a, b, c])
    assert [m["order"] for m in merged] == ["torch-first", "convcore-first"]
    m = merged[0]
    assert m["rounds"] == 8 and "replicate" not in m
    assert m["convcore_median_ms"] == pytest.approx(1.5e3)       # pooled samples
    assert m["ratio"] == pytest.approx(1.5 / 2.0)
    assert m["rel_diff"] == 3e-6 and m["agree"] is False         # the worst process
    assert m["process_medians_ms"] == [pytest.approx(1e3), pytest.approx(1.5e3)]
    assert m["process_gap"] == pytest.approx(0.5)
    # p95 over each process's own median: process a's 2.0 is its spike (2x),
    # process b, slower throughout, has none.
    assert m["convcore_p95_over_median"] == pytest.approx(np.percentile(
        [1, 1, 1, 2, 1, 1, 1, 1], 95))
    assert merged[1] is c                                          # one process: as it was
    s = networks.summarize(merged)
    assert s["max_process_gap"] == pytest.approx(0.5)
    assert s["max_process_gap_at"] == "N train (torch-first)"
    assert any("two processes of the same import order" in line
               for line in networks.summary_lines(s))
