"""The command line: help on every command, `convcore info` telling the
truth about the build, and bad arguments refused with usage and exit code
2 for every command, including ones added later (found by introspecting
the parser): unknown flags, stray positionals, non-numbers for numeric
options, values outside an option's choices."""
import argparse

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
    commands = _commands()
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


# --- bad arguments: usage and exit 2 for every command, found by introspecting the parser ---

def _commands():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _refused(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, (argv, err)
    assert "usage:" in err and "error:" in err, (argv, err)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_unknown_flag_and_stray_argument(capsys, command):
    _refused(capsys, [command, "--definitely-not-a-flag"])
    _refused(capsys, [command, "stray", "positional", "words"])
    _refused(capsys, [command, "--definitely-not-a-flag=1"])


@pytest.mark.parametrize("command", sorted(_commands()))
def test_typed_options_refuse_bad_values(capsys, command):
    for action in _commands()[command]._actions:
        if not action.option_strings or action.nargs == 0:
            continue
        flag = action.option_strings[-1]
        if action.type in (int, float):
            _refused(capsys, [command, flag, "not-a-number"])
            _refused(capsys, [command, flag, "1e999x"])
        if action.choices is not None:
            _refused(capsys, [command, flag, "no-such-choice-zzz"])
        if action.nargs in (None, 1):
            _refused(capsys, [command, flag])          # value missing


@pytest.mark.parametrize("argv", [["--json"], ["info", "--json", "--json=1"],
                                  ["INFO"], ["", "info"], ["info", "\x00"]])
def test_malformed_command_lines(capsys, argv):
    _refused(capsys, argv)
