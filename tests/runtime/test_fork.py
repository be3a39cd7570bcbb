"""fork safety: a multiprocessing child ('fork' and 'spawn') that uses
convcore after the parent ran OpenMP work finishes (libgomp would hang a
forked child's first parallel region); the forked one runs single-threaded
and says so once. Each scenario runs in its own interpreter under a
timeout, so a hang is a failure, not a stuck test run."""
import os
import subprocess
import textwrap

import pytest

from subprocess_helpers import run_python

SCRIPT = textwrap.dedent("""
    import multiprocessing as mp, os, sys, threading, warnings
    import numpy as np
    import convcore, convcore.functional as F
    from convcore._runtime import threads as _threads
    from convcore._kernels import openmp_info

    def work(_):
        x = np.ones((4, 16, 32, 32), np.float32)
        w = np.ones((16, 16, 3, 3), np.float32)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            ys = [F.conv2d(x, w, padding=1, algorithm=a) for a in ("direct", "im2col", "winograd")]
            p = F.max_pool2d(ys[0], 2)
            F.batch_norm(x, None, None, training=True)
        msgs = [str(r.message) for r in rec if "forked child" in str(r.message)]
        return ([float(y[0, 0, 5, 5]) for y in ys], float(p[0, 0, 2, 2]),
                _threads.kernel_threads(10**12), len(msgs), os.getpid())

    if __name__ == "__main__":
        method = sys.argv[1]
        convcore.set_num_threads(2)
        assert openmp_info.openmp_enabled()
        assert _threads.kernel_threads(10**12) == 2
        # The parent runs real parallel regions first (this is what breaks libgomp).
        x = np.ones((8, 16, 32, 32), np.float32)
        w = np.ones((16, 16, 3, 3), np.float32)
        for a in ("direct", "im2col", "winograd"):
            F.conv2d(x, w, padding=1, algorithm=a)
        if method == "os.fork":
            pid = os.fork()
            if pid == 0:
                r = work(0)
                os._exit(0 if r[0] == [144.0] * 3 and r[2] == 1 and r[3] == 1 else 3)
            _, status = os.waitpid(pid, 0)
            print("child status", status)
            sys.exit(os.waitstatus_to_exitcode(status))
        warnings_per_child = {}
        with mp.get_context(method).Pool(2) as pool:
            for vals, pooled, threads, warned, pid in pool.map(work, range(4)):
                assert vals == [144.0] * 3 and pooled == 144.0, vals
                assert threads == (1 if method == "fork" else 2), threads
                warnings_per_child[pid] = warnings_per_child.get(pid, 0) + warned
        # One warning in each forked child, however many calls it made.
        expected = 1 if method == "fork" else 0
        assert set(warnings_per_child.values()) == {expected}, warnings_per_child
        assert _threads.kernel_threads(10**12) == 2   # the parent is unaffected
        print("ok", method)
""")


def _run(method, tmp_path):
    from convcore._kernels import openmp_info
    if not openmp_info.openmp_enabled():
        pytest.skip("built without OpenMP: nothing to hang")
    script = tmp_path / "fork_script.py"
    script.write_text(SCRIPT)
    try:
        proc = run_python(str(script), method, cwd=str(tmp_path), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a '{method}' child hung after the parent ran OpenMP work")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("method", ["fork", "spawn", "os.fork"])
def test_child_after_parent_openmp_work_finishes(method, tmp_path):
    _run(method, tmp_path)


def test_fork_while_another_thread_holds_the_threads_lock():
    """A lock held by a parent thread at the fork would be held forever in
    the child; _fork gives the child fresh state."""
    from convcore._runtime import threads as _threads
    import threading
    held, release = threading.Event(), threading.Event()

    def holder():
        with _threads._lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:  # child: must not deadlock on the inherited lock
        try:
            with _threads.blas_single():
                pass
            os._exit(0)
        finally:
            os._exit(4)
    release.set()
    t.join()
    deadline_status = None
    import time
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            deadline_status = status
            break
        time.sleep(0.05)
    if deadline_status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child deadlocked on convcore._runtime.threads._lock")
    assert os.waitstatus_to_exitcode(deadline_status) == 0
