"""Every C header of the kernels compiles on its own, and through the
package path a downstream build uses (convcore.get_include())."""
import os
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

import convcore

KERNELS = Path(convcore.__file__).resolve().parent / "_kernels"
HEADERS = sorted(p.name for p in KERNELS.glob("*.h"))


def _cc():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cmd = shlex.split(cc)
    return cmd if shutil.which(cmd[0]) else None


def test_headers_are_shipped():
    assert {"simd.h", "row_reductions.h", "batchnorm.h", "pool.h"} <= set(HEADERS)


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("flags", [[], ["-fopenmp-simd"], ["-DCONVCORE_NO_CLONES"]],
                         ids=["serial", "openmp-simd", "no-clones"])
def test_header_compiles_alone(header, flags, tmp_path):
    cc = _cc()
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "use.c"
    # Twice: the include guard must hold.
    src.write_text(f'#include "convcore/_kernels/{header}"\n' * 2)
    out = subprocess.run(cc + ["-fsyntax-only", "-Werror=implicit-function-declaration",
                               "-x", "c", *flags, "-I", convcore.get_include(), str(src)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
