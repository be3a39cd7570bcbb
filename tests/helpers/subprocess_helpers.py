"""Child interpreters that import the same convcore as the test run.

The suite imports convcore installed (or built in place, with PYTHONPATH);
a child started from the repository's root would import the uncompiled
source tree instead, since `python -m`/`-c` put the working directory first
on sys.path. So children get convcore's home at the front of PYTHONPATH and
run from a neutral directory."""
import os
import subprocess
import sys
import tempfile

import convcore

CONVCORE_HOME = os.path.dirname(os.path.dirname(os.path.abspath(convcore.__file__)))


def convcore_env(base=None, **extra):
    """A copy of `base` (default os.environ) whose PYTHONPATH starts with
    the directory holding the convcore under test; `extra` variables added."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [CONVCORE_HOME, env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_python(*args, cwd=None, env=None, timeout=300):
    """`python args...` with convcore_env(env), from `cwd` or a fresh
    temporary directory; returns the CompletedProcess (text output)."""
    with tempfile.TemporaryDirectory() as tmp:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              timeout=timeout, env=convcore_env(env), cwd=cwd or tmp)
