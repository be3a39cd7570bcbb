"""The kernels' GEMMs go to the newer of scipy's and numpy's OpenBLAS
(convcore._runtime.blas_backend); whichever it is, results are the reference's,
and CONVCORE_BLAS forces a choice."""
import json

import numpy as np
import pytest

import convcore
from convcore._runtime import blas_backend as _blas_backend
from convcore._runtime import threads as _threads
from convcore._kernels import blas
from subprocess_helpers import run_python


def test_selected_backend_computes_products(rng):
    lib = _blas_backend.select()
    assert lib is not None
    assert [lib.filepath] == [k.lib.filepath for k in _threads._kernel_knobs()]
    assert _blas_backend._agrees(blas)
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    y = convcore.F.conv2d(x, w, padding=1, algorithm="im2col")
    from ref_conv import conv2d_ref
    np.testing.assert_allclose(y, conv2d_ref(x.astype(np.float64), w.astype(np.float64),
                                             None, 1, 1, 1, 1), rtol=1e-4, atol=1e-4)


CHILD = r"""
import json, numpy as np, convcore
from convcore import F
from convcore._runtime import blas_backend as _blas_backend
from convcore._kernels import blas
_blas_backend.select()
x = np.random.default_rng(0).standard_normal((1, 4, 6, 6))
w = np.random.default_rng(1).standard_normal((5, 4, 3, 3))
y = F.conv2d(x, w, algorithm="im2col")
print(json.dumps({"external": blas.external_in_use(), "lib": _blas_backend.describe(),
                  "y": y.ravel()[:5].tolist()}))
"""


@pytest.mark.parametrize("choice", ["scipy", "numpy", "auto"])
def test_convcore_blas_variable_forces_a_backend(choice):
    out = run_python("-c", CHILD, env={**__import__("os").environ, "CONVCORE_BLAS": choice})
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if choice == "scipy":
        assert r["external"] == [False, False]
    elif choice == "numpy" and "openblas" in r["lib"] and r["external"][0]:
        assert r["external"] == [True, True]
    base = run_python("-c", CHILD, env={**__import__("os").environ, "CONVCORE_BLAS": "scipy"})
    np.testing.assert_allclose(r["y"], json.loads(base.stdout.strip().splitlines()[-1])["y"],
                               rtol=1e-12)
