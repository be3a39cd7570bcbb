"""Thread count changes speed, never results; the thread setting governs
the BLAS too; Python threads may call the kernels concurrently (results as
serial, no deadlock, the GIL released)."""
import os
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import convcore
from convcore import F
from convcore._kernels import openmp_info
from convcore._runtime import threads as _threads


@pytest.fixture
def restore_threads(monkeypatch):
    """Restores the thread count, and lets even these small layers use
    every thread (the grain size would otherwise keep them on one)."""
    monkeypatch.setattr(_threads, "GRAIN", 1)
    previous = convcore.get_num_threads()
    yield
    convcore.set_num_threads(previous)


SHAPES = [
    # (x shape, w shape, geometry): batch-parallel and single-image plans
    ((12, 8, 11, 9), (6, 4, 3, 3), dict(padding=1, groups=2)),
    ((1, 16, 12, 12), (8, 16, 3, 3), dict(stride=2, padding=1)),
    ((3, 6, 10, 10), (6, 1, 3, 3), dict(padding=1, groups=6)),
    ((9, 8, 6, 6), (4, 8, 1, 1), {}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,geom", SHAPES)
def test_one_and_two_threads_agree(xs, ws, geom, dtype, restore_threads, rng):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    results = {}
    for n in (1, 2):
        convcore.set_num_threads(n)
        for algo in ("direct", "im2col"):
            y = F.conv2d(x, w, **geom, algorithm=algo)
            grads = F.conv2d_backward(np.cos(y), x, w, **geom, algorithm=algo)
            results[n, algo] = (y,) + grads
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for algo in ("direct", "im2col"):
        for a, b in zip(results[1, algo], results[2, algo]):
            # The summation order is fixed by design (per-plane workers,
            # fixed weight-gradient chunks), so the same algorithm gives
            # the same bits at 1 and 2 threads; allow float tolerance only
            # for the BLAS's own blocking (a batch of one runs stripes of
            # rows at 2 threads, whole GEMMs at 1), on the arrays' scale.
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))
        if algo == "direct":
            for a, b in zip(results[1, algo], results[2, algo]):
                np.testing.assert_array_equal(a, b)


def test_set_num_threads_validates_and_returns_previous(restore_threads):
    current = convcore.get_num_threads()
    assert convcore.set_num_threads(1) == current
    assert convcore.get_num_threads() == 1
    with pytest.raises(ValueError, match="n must be >= 1"):
        convcore.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        convcore.set_num_threads(2.0)


def test_small_work_runs_on_one_thread():
    # Built without OpenMP every kernel runs on one thread.
    with_threads = convcore.get_num_threads() if openmp_info.openmp_enabled() else 1
    assert _threads.kernel_threads(10) == 1
    assert _threads.kernel_threads(_threads.GRAIN * 1000) == with_threads
    assert _threads.kernel_threads() == with_threads


def _blas_counts():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_blas_single_holds_the_kernels_blas_only():
    """The BLAS the kernels call (scipy's) runs on one thread under a
    kernel call; numpy's, which convcore never calls, keeps its count."""
    before = _blas_counts()
    assert before, "no BLAS found by threadpoolctl"
    kernel = {lib.filepath for lib in _threads._kernel_blas_libs()}
    assert kernel
    with _threads.blas_single():
        during = _blas_counts()
    assert all(during[path] == 1 for path in kernel), during
    assert all(during[path] == before[path] for path in during if path not in kernel)
    assert _blas_counts() == before


def test_kernel_blas_is_scipys():
    import scipy
    scipy_dir = os.path.dirname(os.path.dirname(scipy.__file__))
    for lib in _threads._kernel_blas_libs():
        if "scipy" in os.path.basename(os.path.dirname(lib.filepath)):
            assert lib.filepath.startswith(scipy_dir)


def test_linear_leaves_numpy_blas_alone(rng):
    # linear runs on convcore's threads through the kernels' BLAS:
    # numpy's pool is neither used nor limited.
    before = _blas_counts()
    x = rng.standard_normal((32, 512)).astype(np.float32)
    w = rng.standard_normal((100, 512)).astype(np.float32)
    y = F.linear(x, w)
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-3)
    assert _blas_counts() == before


def test_built_with_openmp():
    """Our build on this machine must have OpenMP (the fallback is for
    compilers without it); CONVCORE_NO_OPENMP builds are the exception."""
    import os
    if os.environ.get("CONVCORE_NO_OPENMP"):
        pytest.skip("built with CONVCORE_NO_OPENMP")
    assert openmp_info.openmp_enabled()
    assert openmp_info.build_info()["openmp"]


@pytest.mark.parametrize("env,expect", [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "active"}, "active"),
                                        ({"GOMP_SPINCOUNT": "1000"}, None)])
def test_openmp_waits_passively_unless_the_user_chose(env, expect):
    import os
    from subprocess_helpers import run_python
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    clean.update(env)
    out = run_python("-c", "import os, convcore; print(os.environ.get('OMP_WAIT_POLICY'))",
                     env=clean, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(expect)


def test_gemm_split_slabs():
    from convcore._kernels import blas
    assert blas.slabs(64, 84, 10) == 1           # too little work to share
    assert blas.slabs(8, 8, 1 << 20) == 1        # too narrow to cut
    assert 1 < blas.slabs(512, 512, 512) <= 16
    assert blas.slabs(512, 512, 512, 2) == 2     # one per thread
    assert blas.slabs(1000, 32, 512) == blas.slabs(32, 1000, 512)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 4097, 700), (1, 5, 3), (3, 1000, 700), (1000, 3, 700),
                                   (257, 130, 999), (64, 4097, 256)])
def test_gemm_split_matches_reference_at_any_thread_count(m, n, k, trans_a, trans_b,
                                                                  dtype, rng):
    from convcore._kernels import blas
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    ref = 0.5 * ((a.T if trans_a else a).astype(np.float64)
                 @ (b.T if trans_b else b).astype(np.float64)) + 2.0 * c0
    results = []
    with _threads.blas_single():
        for threads in (1, 2, 3):
            c = c0.copy()
            blas.gemm_py(trans_a, trans_b, 0.5, a, b, 2.0, c, threads)
            results.append(c)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for c in results:
        np.testing.assert_allclose(c, ref, rtol=tol, atol=tol * np.sqrt(k))
    if dtype == np.float32:  # OpenBLAS's float32 kernels sum a slab as the whole
        np.testing.assert_array_equal(results[1], results[0])
        np.testing.assert_array_equal(results[2], results[0])


# --- thread safety: Python threads calling the kernels concurrently ----------

def _workload(seed, dtype):
    """conv (each algorithm), max pooling and batch norm, forward and backward."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 16, 10, 10)).astype(dtype)
    w = rng.standard_normal((16, 16, 3, 3)).astype(dtype)
    out = {}
    for algo in ("direct", "im2col", "winograd"):
        y = F.conv2d(x, w, padding=1, algorithm=algo)
        out[f"conv_{algo}"] = y
        out[f"conv_back_{algo}"] = F.conv2d_backward(y, x, w, padding=1, algorithm=algo)
    p, idx = F.max_pool2d(out["conv_direct"], 2, return_indices=True)
    out["pool"] = p
    out["pool_back"] = F.max_pool2d_backward(p, idx, out["conv_direct"].shape)
    y, mean, invstd = F.batch_norm(x, None, None, training=True, return_stats=True)
    out["bn"] = y
    out["bn_back"] = F.batch_norm_backward(p.repeat(2, 2).repeat(2, 3), x, mean, invstd)
    return out


def _assert_same(a, b, where):
    for key in a:
        va, vb = a[key], b[key]
        for ea, eb in zip(va if isinstance(va, tuple) else (va,),
                          vb if isinstance(vb, tuple) else (vb,)):
            if ea is None:
                assert eb is None
                continue
            tol = 1e-5 if ea.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(ea, eb, rtol=tol, atol=tol, err_msg=f"{where} {key}")


def test_eight_threads_get_the_results_of_lone_calls():
    jobs = [(seed, np.float32 if seed % 2 else np.float64) for seed in range(8)]
    expected = [_workload(*job) for job in jobs]
    results = [[] for _ in jobs]
    errors = []
    start = threading.Barrier(len(jobs))

    def run(i):
        try:
            start.wait()
            for _ in range(3):
                results[i].append(_workload(*jobs[i]))
        except BaseException as e:  # reported below, not lost in the thread
            errors.append((i, repr(e)))

    blas_before = [info["num_threads"] for info in _threads.blas_info()]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    for i, runs in enumerate(results):
        assert len(runs) == 3
        for r in runs:
            _assert_same(expected[i], r, f"thread {i}")
    # Overlapping kernel calls leave the BLAS as they found it.
    assert [info["num_threads"] for info in _threads.blas_info()] == blas_before
    assert _threads._blas_held == 0


def _kernel_blas_threads():
    return [knob.get() for knob in _threads._kernel_knobs()]


def test_overlapping_blas_holds_restore_the_original():
    original = [info["num_threads"] for info in _threads.blas_info()]
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with _threads.blas_single():
            a_in.set()
            b_in.wait(10)
            seen["a"] = _kernel_blas_threads()
        a_out.set()

    def b():
        a_in.wait(10)
        with _threads.blas_single():
            b_in.set()
            a_out.wait(10)
            seen["b"] = _kernel_blas_threads()

    ts = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    # A leaving does not raise the count under B's GEMMs; nobody leaves it lowered.
    assert seen["a"] and all(n == 1 for n in seen["a"]) and all(n == 1 for n in seen["b"]), seen
    assert [info["num_threads"] for info in _threads.blas_info()] == original


def test_holds_from_any_python_thread_take_effect():
    # threadpoolctl alone ignores limits from a thread that does not
    # "control" OpenBLAS; the kernels' hold must work in worker threads.
    with _threads.blas_single():
        pass  # the main thread has held the BLAS before
    original = [info["num_threads"] for info in _threads.blas_info()]
    seen = []

    def worker():
        with _threads.blas_single():
            seen.append(_kernel_blas_threads())

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert seen and all(n == 1 for n in seen[0]), seen
    assert [info["num_threads"] for info in _threads.blas_info()] == original


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _pair_ratio(work):
    """Wall time of `work` in two threads at once over that of one call."""
    t0 = time.perf_counter()
    work()
    single = time.perf_counter() - t0
    ts = [threading.Thread(target=work) for _ in range(2)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return (time.perf_counter() - t0) / single


def _big_conv():
    """A one-thread conv of ~30 ms (the blocked direct kernel): long
    against starting two threads."""
    x = np.random.default_rng(0).standard_normal((64, 64, 32, 32)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((64, 64, 3, 3)).astype(np.float32)
    return lambda: F.conv2d(x, w, padding=1, algorithm="direct")


def test_python_runs_while_a_kernel_runs():
    """GIL release, independent of the cores free: a pure-Python loop keeps
    counting while another thread runs a long conv (~30 ms). Were the GIL
    held, the loop would stall for a whole conv; scheduling noise on a busy
    machine is far shorter (and retried)."""
    conv = _big_conv()

    previous = convcore.set_num_threads(1)
    try:
        conv()
        worst = []
        for _ in range(3):
            t0 = time.perf_counter()
            conv()
            duration = time.perf_counter() - t0
            done = threading.Event()
            t = threading.Thread(target=lambda: (conv(), conv(), done.set()))
            gaps, last = [], time.perf_counter()
            t.start()
            while not done.is_set():
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
            t.join()
            worst.append((max(gaps), duration))
            if len(gaps) > 100 and max(gaps) < 0.5 * duration:
                return
    finally:
        convcore.set_num_threads(previous)
    pytest.fail(f"the Python loop stalled (longest gap, conv time): {worst}")


@pytest.mark.skipif(_cores() < 2, reason="overlap needs two cores")
def test_two_threads_overlap():
    """Two threads each running a big single-threaded conv take clearly less
    than twice one of them. The cores are shared with other work: retried,
    and skipped when a known GIL-free control (numpy's single-threaded
    matmul) does not overlap either at that moment."""
    conv = _big_conv()
    a = np.random.default_rng(2).random((600, 600))
    previous = convcore.set_num_threads(1)
    try:
        conv()
        ratios, controls = [], []
        for _ in range(6):
            ratios.append(_pair_ratio(conv))
            if ratios[-1] < 1.8:
                return
            with threadpool_limits(1, user_api="blas"):
                controls.append(_pair_ratio(lambda: a @ a))
    finally:
        convcore.set_num_threads(previous)
    control = min(controls)
    if control >= 1.5:
        pytest.skip(f"no second core free now (control ratio {control:.2f})")
    pytest.fail(f"two threads took {min(ratios):.2f}x one thread's time at best "
                f"(ratios {[round(r, 2) for r in ratios]}; control {control:.2f})")


@pytest.fixture
def region_cost_of(monkeypatch):
    """Set what a parallel region costs (seconds) for kernel_threads."""
    def set_cost(seconds):
        monkeypatch.setattr(_threads, "_region_costs", {})
        monkeypatch.setenv(_threads.REGION_ENV, repr(seconds * 1e6))
    return set_cost


@pytest.mark.skipif(not openmp_info.openmp_enabled(), reason="built without OpenMP")
def test_calls_that_save_less_than_a_region_costs_run_on_one_thread(region_cost_of,
                                                                    restore_threads):
    convcore.set_num_threads(2)
    grain_ok, per_unit = _threads.GRAIN * 16, 1e-9
    # one thread would take grain_ok * per_unit seconds; two save half of it
    saved = grain_ok * per_unit / 2
    region_cost_of(saved / _threads.REGION_MARGIN * 1.01)
    assert _threads.kernel_threads(grain_ok, per_unit) == 1
    assert _threads.kernel_threads(grain_ok) == 2      # no time per unit: GRAIN alone
    region_cost_of(saved / _threads.REGION_MARGIN * 0.99)
    assert _threads.kernel_threads(grain_ok, per_unit) == 2
    region_cost_of(0)
    assert _threads.kernel_threads(2 * _threads.GRAIN, per_unit) == 2
    assert _threads.kernel_threads(_threads.GRAIN, per_unit) == 1


@pytest.mark.skipif(not openmp_info.openmp_enabled(), reason="built without OpenMP")
def test_convolutions_count_their_flops_depthwise_ones_slower(region_cost_of, restore_threads):
    from convcore.functional._conv_spec import conv_spec
    convcore.set_num_threads(2)
    dense = conv_spec((1, 64, 16, 16), (64, 64, 3, 3), np.float32, 1, 1, 1, 1)
    depthwise = conv_spec((1, 64, 16, 16), (64, 1, 3, 3), np.float32, 1, 1, 1, 64)
    # a region cost between the two estimates: the depthwise pass (fewer
    # flops, each slower) and the dense one fall on either side
    t_dense = dense.flops() * _threads.FLOP_SECONDS / 2 / _threads.REGION_MARGIN
    t_dw = depthwise.flops() * _threads.DEPTHWISE_FLOP_SECONDS / 2 / _threads.REGION_MARGIN
    assert t_dw < t_dense
    region_cost_of((t_dw + t_dense) / 2)
    assert _threads.conv_threads(dense) == 2
    assert _threads.conv_threads(depthwise) == 1
    # a backward does twice the forward's work
    region_cost_of(t_dense * 1.5)
    assert _threads.conv_threads(dense) == 1
    assert _threads.conv_threads(dense, backward=True) == 2


@pytest.mark.skipif(not openmp_info.openmp_enabled(), reason="built without OpenMP")
def test_region_cost_measures_regions_of_the_thread_count_against_one(monkeypatch):
    monkeypatch.setattr(_threads, "_region_costs", {})
    monkeypatch.delenv(_threads.REGION_ENV, raising=False)
    calls = []
    real = openmp_info.region_seconds

    def counting(threads, repeats, gap, work):
        calls.append((threads, work))
        return real(threads, repeats, gap, work)
    monkeypatch.setattr(openmp_info, "region_seconds", counting)
    cost = _threads.region_cost(2)
    assert 0 <= cost < 0.05                       # seconds: a region, not a time slice
    # both thread counts do the same work, the regions' own cost shows
    steps = _threads.REGION_PROBE_STEPS
    assert _threads.region_cost(2) == cost and sorted(calls) == [(1, steps), (2, steps)]
    empty, working = (real(1, 5, 1e-4, work) for work in (0, 20 * steps))
    assert len(empty) == 5 and all(t >= 0 for t in empty)
    assert min(working) > 10 * max(empty)         # the work runs: not optimised away


@pytest.fixture
def fake_regions(monkeypatch):
    """A clock the test moves and region timings it chooses: returns
    (now, readings, calls); a pair of regions of 2 threads then 1 thread
    reads the next of `readings` for the 2 (the 1's read 0), and `calls`
    records each sampling as (threads, repeats)."""
    monkeypatch.setattr(_threads, "_region_costs", {})
    monkeypatch.delenv(_threads.REGION_ENV, raising=False)
    now, readings, calls = [100.0], [], []
    monkeypatch.setattr(_threads, "_clock", lambda: now[0])

    def region_samples(threads, repeats):
        calls.append((threads, repeats))
        return [readings.pop(0) for _ in range(repeats)], [0.0] * repeats
    monkeypatch.setattr(_threads, "_region_samples", region_samples)
    return now, readings, calls


def test_region_cost_is_measured_again_later_and_the_largest_kept(fake_regions):
    # a first measurement while other processes kept the CPUs awake reads
    # a wake-up of microseconds; the later ones, tens
    now, readings, calls = fake_regions
    repeats, step = _threads.REGION_REPEATS, _threads.REGION_SLICE_SECONDS * 1.001
    for seconds in (5e-6, 80e-6, 90e-6, 70e-6):
        readings += [seconds] * repeats

    def cost_at(seconds_after_first):
        now[0] = 100.0 + seconds_after_first
        return _threads.region_cost(2)

    last = [0.0]

    def measure_from(start):
        """Calls from `start` (or a slice after the last call, if that is
        later: a measurement spans seconds) on, one a slice apart, until a
        measurement is complete: the cost they returned before it was."""
        start = max(start, last[0] + step)
        seen = [cost_at(start + i * step) for i in range(repeats - 1)]
        last[0] = start + (repeats - 1) * step
        return seen, cost_at(last[0])

    after = _threads.REGION_REMEASURE_AFTER
    assert after == tuple(sorted(after)) and len(after) == 3
    assert cost_at(0) == pytest.approx(5e-6) and calls == [(2, repeats)]
    assert cost_at(after[0] * 0.99) == pytest.approx(5e-6) and len(calls) == 1
    seen, cost = measure_from(after[0])
    assert seen == [pytest.approx(5e-6)] * (repeats - 1) and cost == pytest.approx(80e-6)
    assert calls[1:] == [(2, 1)] * repeats       # later ones a pair of regions a call
    seen, cost = measure_from(after[1])
    assert cost == pytest.approx(90e-6)
    seen, cost = measure_from(after[2] + 50)
    assert cost == pytest.approx(90e-6)          # 70 read last: the largest kept
    assert not readings and len(calls) == 1 + 3 * repeats
    assert cost_at(1e6) == pytest.approx(90e-6) and len(calls) == 1 + 3 * repeats


def test_a_later_measurement_takes_one_slice_per_interval(fake_regions):
    # a whole measurement is about 10 ms: taken in one call, it made that
    # call of a network one of its slowest
    now, readings, calls = fake_regions
    readings += [50e-6] * _threads.REGION_REPEATS + [60e-6] * _threads.REGION_REPEATS
    _threads.region_cost(2)
    now[0] += _threads.REGION_REMEASURE_AFTER[0]
    for _ in range(10):                          # calls in quick succession
        _threads.region_cost(2)
    assert calls == [(2, _threads.REGION_REPEATS), (2, 1)]
    now[0] += _threads.REGION_SLICE_SECONDS * 0.99
    _threads.region_cost(2)
    assert len(calls) == 2
    now[0] += _threads.REGION_SLICE_SECONDS * 0.02
    assert _threads.region_cost(2) == pytest.approx(50e-6) and len(calls) == 3


def test_region_cost_set_in_the_environment_is_never_measured(monkeypatch):
    monkeypatch.setattr(_threads, "_region_costs", {})
    monkeypatch.setenv(_threads.REGION_ENV, "30")
    monkeypatch.setattr(_threads, "_region_samples",
                        lambda threads, repeats: pytest.fail("measured a region"))
    now = [0.0]
    monkeypatch.setattr(_threads, "_clock", lambda: now[0])
    for now[0] in (0.0, 2.0, 100.0):
        assert _threads.region_cost(2) == pytest.approx(30e-6)


def test_region_cost_from_the_environment(monkeypatch):
    monkeypatch.setattr(_threads, "_region_costs", {})
    monkeypatch.setenv(_threads.REGION_ENV, "40")
    assert _threads.region_cost(2) == pytest.approx(40e-6)
    monkeypatch.setattr(_threads, "_region_costs", {})
    monkeypatch.setenv(_threads.REGION_ENV, "not a number")
    monkeypatch.setattr(_threads, "_region_samples",
                        lambda threads, repeats: ([2e-6] * repeats, [1e-6] * repeats))
    assert _threads.region_cost(2) == pytest.approx(2e-6 - 1e-6 / 2)    # measured
