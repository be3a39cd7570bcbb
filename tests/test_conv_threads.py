"""Thread count changes speed, never results; the thread setting governs
the BLAS too."""
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import convcore
from convcore import F, _threads
from convcore._kernels import openmp_info


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
            # for the BLAS's own blocking.
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
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


def test_blas_threads_limits_every_loaded_blas():
    with _threads.blas_threads(1):
        blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
        assert blas, "no BLAS found by threadpoolctl"
        assert all(i["num_threads"] == 1 for i in blas)


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


def test_small_gemms_run_on_one_blas_thread():
    n = convcore.get_num_threads()
    assert _threads.blas_threads_for(64 * 84 * 10) == 1
    assert _threads.blas_threads_for(_threads.BLAS_GRAIN * 1000) == n
