"""convcore.bench.turns: samples taken in turns, within a process and across
processes."""
import json
import sys
import textwrap

import pytest

from convcore.bench import turns
from subprocess_helpers import convcore_env


def test_a_turn_runs_a_block_of_each_callable_in_varying_order():
    log = []
    fns = {"a": lambda: log.append("a"), "b": lambda: log.append("b")}
    s = turns.Sampler(fns, inner={"a": 1, "b": 3}, cold={"a": False, "b": False},
                      block_seconds=10.0, block_cap=2)
    for _ in range(12):
        s.turn()
    assert len(s.samples["a"]) == len(s.samples["b"]) == 24 and s.count() == 24
    blocks = ["".join(log[i:i + 8]) for i in range(0, len(log), 8)]
    assert set(blocks) == {"aabbbbbb", "bbbbbbaa"}          # both orders occur
    assert s.cold == {"a": [], "b": []}


def test_a_block_of_short_calls_opens_with_a_call_timed_apart():
    calls = []
    s = turns.Sampler({"f": lambda: calls.append(1)}, {"f": 2}, {"f": True},
                      block_seconds=10.0, block_cap=3)
    s.turn()
    s.turn()
    assert len(calls) == 2 * (1 + 3 * 2)
    assert len(s.cold["f"]) == 2 and len(s.samples["f"]) == 6


def test_a_block_ends_when_its_time_is_up():
    s = turns.Sampler({"f": lambda: None}, {"f": 1}, {"f": False}, block_seconds=0.0,
                      block_cap=100)
    s.turn()
    assert len(s.samples["f"]) == 1


def test_for_budget_spreads_time_and_samples_over_the_turns():
    s = turns.Sampler.for_budget({"a": None, "b": None}, {"a": 1, "b": 1},
                                 {"a": False, "b": False}, budget=4.0, max_samples=200)
    assert s.block_seconds == pytest.approx(4.0 / (turns.TURNS * 2))
    assert s.block_cap == 200 // turns.TURNS


def test_run_takes_the_repeats_then_stops_at_the_cap():
    s = turns.Sampler({"f": lambda: None}, {"f": 1}, {"f": False}, 0.0, 1)
    s.run(repeats=5, budget=0.0, max_samples=50)
    assert s.count() == 5
    s = turns.Sampler({"f": lambda: None}, {"f": 1}, {"f": False}, 0.0, 1)
    s.run(repeats=5, budget=60.0, max_samples=50)
    assert s.count() == 50


# A child that logs, per turn, when it ran: turns of two processes never overlap.
CHILD = textwrap.dedent("""
    import json, os, sys, time
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    print("stray output goes to stderr")
    from convcore.bench import turns
    log, name = [], sys.argv[1]
    worker = turns.Worker(sys.stdin, replies)
    for w in range(2):
        worker.before_setup()
        log.append(("setup", w, time.monotonic()))
        spans = []
        def fn():
            t0 = time.monotonic(); time.sleep(0.002); spans.append((t0, time.monotonic()))
        s = turns.Sampler({"f": fn}, {"f": 1}, {"f": False}, 0.004, 10)
        worker.sample(s, 3, 0.0, 10)
        log.append(("spans", w, spans))
    with open(name, "w") as f:
        json.dump(log, f)
""")


def _children(tmp_path, n):
    return [(f"child {i}", [sys.executable, "-c", CHILD, str(tmp_path / f"log{i}.json")])
            for i in range(n)]


def test_processes_take_turns_without_overlap(tmp_path):
    ended = []
    turns.run_in_turns(_children(tmp_path, 3), workloads=2, repeats=3, budget=0.0,
                       max_samples=10, env=convcore_env(), cwd=tmp_path,
                       on_workload=ended.append)
    assert ended == [0, 1]
    logs = [json.loads((tmp_path / f"log{i}.json").read_text()) for i in range(3)]
    for w in range(2):
        spans = [s for log in logs for kind, k, s in log if kind == "spans" and k == w]
        assert all(len(s) >= 3 for s in spans)          # every child its repeats
        flat = sorted((a, b) for s in spans for a, b in s)
        assert all(b0 <= a1 for (_, b0), (a1, _) in zip(flat, flat[1:]))


def test_a_child_that_dies_is_named(tmp_path):
    bad = ("bad one", [sys.executable, "-c", "import sys; sys.stdin.readline(); sys.exit(3)"])
    with pytest.raises(RuntimeError, match="bad one.*status 3"):
        turns.run_in_turns(_children(tmp_path, 1) + [bad], workloads=1, repeats=1,
                           budget=0.0, max_samples=10, env=convcore_env(), cwd=tmp_path)
