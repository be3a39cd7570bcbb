"""The command line: help on every command, usage + exit 2 on bad flags,
and `convcore info` telling the truth about the build."""

import pytest

import convcore
from convcore import cli
from subprocess_helpers import run_python


def run_module(module, *args):
    return run_python("-m", module, *args)


def run(*args):
    return run_module("convcore", *args)


def test_info_reports_build_threads_and_blas():
    out = run("info")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert convcore.__version__ in text
    assert "OpenMP" in text and "BLAS" in text and "SIMD" in text
    from convcore._kernels import openmp_info
    if openmp_info.openmp_enabled():
        assert f"OpenMP        on, convcore threads {convcore.get_num_threads()}" in text
    else:  # a CONVCORE_NO_OPENMP build, or a compiler without OpenMP
        assert "OpenMP        OFF: kernels run single-threaded" in text
    assert "openblas" in text.lower()
    clones = openmp_info.build_info()["simd_clones"]
    assert ("AVX2 clones   yes" in text) == clones and ("AVX2 clones   no" in text) != clones
    assert "denormals     kept" in text


def test_every_command_has_help():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert "info" in commands
    for name in commands:
        out = run(name, "--help")
        assert out.returncode == 0 and "usage:" in out.stdout, name


@pytest.mark.parametrize("argv", [["--no-such-flag"], ["no-such-command"], []])
def test_bad_arguments_print_usage_and_exit_2(argv):
    out = run(*argv)
    assert out.returncode == 2
    assert "usage:" in out.stderr


def test_demo_runs_and_algorithms_agree():
    out = run_module("convcore.demo")
    assert out.returncode == 0, out.stderr
    for algo in ("direct", "im2col"):
        assert algo in out.stdout
    diffs = [float(line.rsplit(" ", 1)[1]) for line in out.stdout.splitlines() if "max rel. diff" in line]
    assert diffs and max(diffs) < 1e-4


def test_closed_pipe_ends_quietly():
    """`convcore train | head -1`: no traceback when the reader leaves."""
    import subprocess
    import sys
    import tempfile

    from subprocess_helpers import convcore_env
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.Popen([sys.executable, "-m", "convcore", "train", "--epochs", "1",
                                 "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=convcore_env(), cwd=cwd)
        proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err
