"""Library messages go through `logging` under the "convcore" logger: no
print() in library code; fit(verbose=True) shows its lines when logging
is unconfigured, and an application's logging setup (a file, a level on
the "convcore" logger) decides otherwise."""
import ast
import logging
import pathlib
import sys
import textwrap

import pytest

import convcore
from convcore._runtime import logs
from subprocess_helpers import run_python

PACKAGE = pathlib.Path(convcore.__file__).parent
# Where printing is the point: the command line's report, the benchmark
# tables and the demo script (python -m convcore.demo).
OUTPUT_MODULES = ("cli", "bench", "demo.py")


def test_library_code_never_prints():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in OUTPUT_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []


FIT = textwrap.dedent("""
    import logging, sys
    import numpy as np
    from convcore import nn, optim
    from convcore.training import fit
    {setup}
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, rng=0))
    x = np.arange(24, dtype=np.float32).reshape(6, 1, 2, 2) / 24
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1),
        (x, np.array([0, 1] * 3)), epochs=2, progress=False, verbose=True)
    print("done")
""")


def _fit_output(setup):
    out = run_python("-c", FIT.format(setup=setup))
    assert out.returncode == 0, out.stderr
    return out


def test_verbose_lines_show_on_stdout_without_logging_setup():
    out = _fit_output("")
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["epoch=1", "epoch=2", "done"]
    assert "train_loss=" in lines[0] and out.stderr == ""


def test_application_logging_decides_where_lines_go(tmp_path):
    log = tmp_path / "run.log"
    out = _fit_output(f"logging.basicConfig(filename={str(log)!r}, level=logging.INFO, "
                      "format='%(name)s %(message)s')")
    assert out.stdout == "done\n"
    text = log.read_text().splitlines()
    assert len(text) == 2 and text[0].startswith("convcore.training.loop epoch=1 ")


def test_convcore_logger_level_silences_it():
    out = _fit_output("logging.getLogger('convcore').setLevel(logging.WARNING)")
    assert out.stdout == "done\n" and out.stderr == ""


def test_console_restores_the_logger_and_follows_sys_stdout(capsys, monkeypatch):
    logger = logging.getLogger("convcore")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's capture handler
    before = (logger.level, list(logger.handlers))
    with logs.console():
        logging.getLogger("convcore.some.module").info("hello")
        logging.getLogger("convcore.some.module").debug("not shown")
    logging.getLogger("convcore.some.module").info("after the block: not shown")
    assert capsys.readouterr().out == "hello\n"
    assert (logger.level, list(logger.handlers)) == before


def test_console_leaves_a_configured_application_alone(capsys):
    # pytest's logging plugin has a handler on the root logger: "configured"
    assert logging.getLogger().handlers
    with logs.console():
        logging.getLogger("convcore.x").warning("to the application's handlers only")
    assert capsys.readouterr().out == ""
    with logs.console(force=True):  # the command line: shown regardless
        logging.getLogger("convcore.x").warning("shown")
    assert capsys.readouterr().out == "shown\n"


def test_broken_pipe_reaches_the_caller(monkeypatch):
    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass
    monkeypatch.setattr(sys, "stdout", Closed())
    with pytest.raises(BrokenPipeError), logs.console(force=True):
        logging.getLogger("convcore.x").info("lost")
