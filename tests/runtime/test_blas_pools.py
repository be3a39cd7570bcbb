"""A user's threaded numpy GEMM leaves OpenBLAS workers spinning; the next
convcore call stops that pool (convcore._runtime.blas_pools) unless another
thread could be inside it, and the user's numpy keeps its thread count and
its results. Each case runs in a fresh interpreter: the guard looks at every
thread of the process."""
import json
import os

import pytest

from subprocess_helpers import run_python

# Prints one JSON line: the pools' flags and thread counts around a user's
# matmul and convcore calls. MODE: "alone", "other-thread".
PROBE = r"""
import ctypes, json, sys, threading, time
import numpy as np
from threadpoolctl import ThreadpoolController
import convcore
from convcore import F
from convcore._kernels import blas
from convcore._runtime import blas_pools

mode = sys.argv[1]
convcore.set_num_threads(2)
ctl = ThreadpoolController()
numpy_lib = next((l for l in ctl.lib_controllers
                  if l.internal_api == "openblas" and "numpy" in l.filepath
                  and getattr(l, "threading_layer", "") == "pthreads"), None)
if numpy_lib is None or numpy_lib.num_threads < 2:
    print(json.dumps({"skip": "no threaded pthreads OpenBLAS under numpy"}))
    sys.exit(0)
up = ctypes.c_int.in_dll(numpy_lib.dynlib, "blas_server_avail")
threads_before = numpy_lib.num_threads
stop = threading.Event()
if mode == "other-thread":
    threading.Thread(target=stop.wait, daemon=True).start()
rng = np.random.default_rng(0)
a = rng.standard_normal((300, 300))
expect = a @ a
x = rng.standard_normal((4, 16, 20, 20)).astype(np.float32)
w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
y_ref = F.conv2d(x, w, padding=1, algorithm="im2col")
stops0 = blas.pool_stops()
a @ a                                  # the user's threaded GEMM: the pool is up
up_after_matmul = up.value
y = F.conv2d(x, w, padding=1, algorithm="im2col")
up_after_convcore = up.value
stops = blas.pool_stops() - stops0
threads_after = numpy_lib.num_threads  # the user's count, whatever happened
again = a @ a                          # starts the pool again if it was stopped
print(json.dumps({
    "up_after_matmul": up_after_matmul, "up_after_convcore": up_after_convcore,
    "up_after_user_again": up.value, "stops": stops,
    "threads_before": threads_before, "threads_after": threads_after,
    "user_result_equal": bool(np.allclose(again, expect, rtol=1e-12, atol=1e-12)),
    "conv_equal": bool(np.array_equal(y, y_ref)),
    "describe": blas_pools.describe(),
}))
stop.set()
"""


def _probe(mode, **env):
    clean = {k: v for k, v in os.environ.items() if k != "CONVCORE_STOP_BLAS_POOLS"}
    clean.update(env)
    out = run_python("-c", PROBE, mode, env=clean, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if "skip" in r:
        pytest.skip(r["skip"])
    return r


def test_a_convcore_call_stops_the_pool_a_user_matmul_left_up():
    r = _probe("alone")
    assert r["up_after_matmul"] == 1
    assert r["up_after_convcore"] == 0 and r["stops"] >= 1
    # The user's numpy: same thread count, same results, its pool back.
    assert r["threads_after"] == r["threads_before"]
    assert r["user_result_equal"] and r["conv_equal"]
    assert r["up_after_user_again"] == 1
    assert "stopped at a kernel call" in r["describe"]


def test_no_pool_is_stopped_while_another_thread_may_be_in_it():
    r = _probe("other-thread")
    assert r["up_after_matmul"] == 1
    assert r["up_after_convcore"] == 1 and r["stops"] == 0
    assert r["threads_after"] == r["threads_before"]
    assert r["user_result_equal"] and r["conv_equal"]


def test_opt_out_leaves_pools_alone():
    r = _probe("alone", CONVCORE_STOP_BLAS_POOLS="0")
    assert r["up_after_convcore"] == 1 and r["stops"] == 0
    assert "left spinning" in r["describe"]


# One process: a convcore convolution's median time right after a user's
# matmul against its median after the same pause without one.
TIMING = r"""
import json
import numpy as np
import convcore
from convcore import F
from convcore.bench.after_matmul import times_after_matmul
convcore.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 256, 10, 10)).astype(np.float32)
w = rng.standard_normal((512, 256, 1, 1)).astype(np.float32)
run = lambda: F.conv2d(x, w)
for _ in range(3):
    run()
print(json.dumps(times_after_matmul(run, rounds=9, pause=0.15)))
"""


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@pytest.mark.skipif(_cores() < 2, reason="needs two cores")
def test_a_user_matmul_does_not_halve_the_next_call():
    out = run_python("-c", TIMING, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # With the worker left spinning the call ran at one thread's speed
    # (1.8-2x); generous for a loaded machine.
    assert r["after_matmul"] <= 1.4 * r["plain"], r


def test_threads_known_never_to_call_a_blas():
    import threading
    from convcore._runtime import blas_pools

    def thread_of(module, name, base=threading.Thread, **kwargs):
        cls = type(name, (base,), {"__module__": module})
        return cls(**kwargs)

    class Service:  # what ipykernel gives a plain Thread as its target
        def run(self):
            pass
    Service.__module__, Service.__qualname__ = "ipykernel.iostream", "IOPubThread"

    assert blas_pools._quiet(thread_of("tqdm._monitor", "TMonitor"))
    assert blas_pools._quiet(thread_of("ipykernel.heartbeat", "Heartbeat"))
    assert blas_pools._quiet(threading.Thread(target=Service().run))
    # user code may run in these: never quiet
    assert not blas_pools._quiet(thread_of("ipykernel.subshell", "SubshellThread"))
    assert not blas_pools._quiet(threading.Thread(target=print))
    assert not blas_pools._quiet(thread_of("mypackage", "Worker"))


KERNEL_CODE = r"""
import threading, numpy as np, convcore
from convcore import F
from convcore._kernels import blas
from convcore._runtime import blas_pools
convcore.set_num_threads(2)
x = np.ones((4, 64, 10, 10), np.float32); w = np.ones((128, 64, 1, 1), np.float32)
F.conv2d(x, w)
a = np.ones((300, 300)); a @ a
before = blas.pool_stops()
F.conv2d(x, w)
print("RESULT", blas_pools.no_other_blas_callers(), blas.pool_stops() - before)
"""


def test_a_jupyter_kernels_threads_do_not_block_the_stop():
    pytest.importorskip("ipykernel")
    manager = pytest.importorskip("jupyter_client.manager")
    import tempfile
    from subprocess_helpers import convcore_env
    # From a neutral directory: a kernel puts its working directory first on
    # sys.path, where the repository's uncompiled sources would shadow the
    # convcore under test (subprocess_helpers).
    with tempfile.TemporaryDirectory() as tmp:
        text = _run_in_kernel(manager, KERNEL_CODE, env=convcore_env(), cwd=tmp)
    quiet, stops = text.split("RESULT")[1].split()
    assert quiet == "True"
    # numpy's pool was up after the matmul whenever it has threads
    assert int(stops) in (0, 1) if _cores() < 2 else int(stops) >= 1


def _run_in_kernel(manager, code, **kwargs):
    """Run `code` in a fresh Jupyter kernel; its printed output."""
    km, kc = manager.start_new_kernel(kernel_name="python3", **kwargs)
    try:
        kc.execute(code)
        text = ""
        while "RESULT" not in text:
            msg = kc.get_iopub_msg(timeout=120)
            if msg["msg_type"] == "error":
                pytest.fail("\n".join(msg["content"]["traceback"]))
            if msg["msg_type"] == "stream":
                text += msg["content"]["text"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return text
