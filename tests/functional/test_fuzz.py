"""Runs the hypothesis fuzzing of the functional API (tests/functional/fuzz_kernels.py)
in a child interpreter: a crash in a compiled kernel then fails this test
with the signal's name instead of taking the whole pytest run down."""
import os
import signal
import pytest

from subprocess_helpers import run_python

pytest.importorskip("hypothesis")

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)


def test_fuzz_kernels_in_a_subprocess():
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    # From a neutral directory (not the source tree), the suite's helpers
    # on the path by their absolute directory.
    proc = run_python(
        "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "-x",
        "--import-mode=importlib", "--rootdir", TESTS,
        "-o", f"pythonpath={os.path.join(TESTS, 'reference')}", os.path.join(HERE, "fuzz_kernels.py"), env=env)
    if proc.returncode < 0:
        pytest.fail(f"the fuzzed kernels crashed the interpreter with "
                    f"{signal.Signals(-proc.returncode).name}:\n{proc.stdout[-4000:]}"
                    f"\n{proc.stderr[-4000:]}")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
