"""convcore is typed (PEP 561): it ships py.typed, mypy passes on the
package with the pyproject configuration, and a user's code that calls
the public API type-checks, while a wrong call is caught."""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import convcore

pytest.importorskip("mypy")

HOME = pathlib.Path(convcore.__file__).resolve().parent.parent
PYPROJECT = HOME / "pyproject.toml"


def mypy(*args, cwd, tmp_path):
    env = dict(os.environ)
    if PYPROJECT.is_file():
        # A source tree (built in place): show mypy where convcore is. An
        # installed convcore is found in site-packages, which mypy refuses
        # on MYPYPATH.
        env["MYPYPATH"] = str(HOME)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache"),
         "--no-error-summary", *args], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=600)


def test_package_ships_the_py_typed_marker():
    assert (HOME / "convcore" / "py.typed").is_file()
    if PYPROJECT.is_file():  # a source tree: the marker is declared as package data
        assert '"py.typed"' in PYPROJECT.read_text()


@pytest.mark.skipif(not PYPROJECT.is_file(), reason="needs the source tree's pyproject.toml")
def test_mypy_passes_on_the_package(tmp_path):
    out = mypy("--config-file", str(PYPROJECT), cwd=HOME, tmp_path=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


USER_CODE = textwrap.dedent("""
    import numpy as np
    import convcore
    from convcore import F, nn, optim
    from convcore.training import History, fit

    gen: np.random.Generator = convcore.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = np.zeros((6, 1, 2, 2), np.float32)
    history: History = fit(model, nn.CrossEntropyLoss(), opt, (x, np.zeros(6, np.int64)),
                           epochs=1, progress=False)
    y: np.ndarray = F.linear(np.zeros((2, 3)), np.zeros((4, 3)))
    masked, mask = F.dropout(y, 0.5, return_mask=True)
    norm: float = optim.clip_grad_norm_(model.parameters(), 1.0)
    state = convcore.load("weights.npz")
    include: str = convcore.get_include()
""")


# A user's mypy reads an installed convcore's types but reports no errors
# inside it (site-packages); with the source tree on MYPYPATH,
# --follow-imports=silent does the same.
AS_INSTALLED = "--follow-imports=silent"


def test_user_code_calling_the_public_api_type_checks(tmp_path):
    (tmp_path / "user.py").write_text(USER_CODE)
    out = mypy(AS_INSTALLED, "--strict-optional", "user.py", cwd=tmp_path, tmp_path=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("line, complaint", [
    ('convcore.manual_seed("0")', 'incompatible type "str"; expected "int"'),
    ("n: int = convcore.get_include()", 'incompatible types in assignment'),
    ("optim.SGD(model.parameters(), lr='0.1')", 'incompatible type "str"; expected "float"'),
    ("fit(model, nn.CrossEntropyLoss(), opt, (x, x), epochs='2')",
     'incompatible type "str"; expected "int"'),
])
def test_wrong_calls_are_caught(tmp_path, line, complaint):
    (tmp_path / "user.py").write_text(USER_CODE + line + "\n")
    out = mypy(AS_INSTALLED, "user.py", cwd=tmp_path, tmp_path=tmp_path)
    assert out.returncode == 1
    assert complaint in out.stdout.lower() or complaint in out.stdout, out.stdout
