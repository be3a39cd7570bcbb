"""Runs the hypothesis fuzzing of the functional API (tests/fuzz_kernels.py)
in a child interpreter: a crash in a compiled kernel then fails this test
with the signal's name instead of taking the whole pytest run down."""
import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("hypothesis")

HERE = os.path.dirname(os.path.abspath(__file__))


def test_fuzz_kernels_in_a_subprocess():
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "-x",
         "--import-mode=importlib", "--rootdir", os.path.dirname(HERE),
         "-o", "pythonpath=tests", os.path.join(HERE, "fuzz_kernels.py")],
        capture_output=True, text=True, timeout=300, env=env,
        cwd=os.path.dirname(HERE))
    if proc.returncode < 0:
        pytest.fail(f"the fuzzed kernels crashed the interpreter with "
                    f"{signal.Signals(-proc.returncode).name}:\n{proc.stdout[-4000:]}"
                    f"\n{proc.stderr[-4000:]}")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
