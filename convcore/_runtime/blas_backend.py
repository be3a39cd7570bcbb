"""Which BLAS the kernels' GEMMs go to.

Two OpenBLAS copies are loaded in every convcore process: scipy's, which
scipy.linalg.cython_blas exposes to nogil code (the supported path), and
numpy's, which numpy's own matmul uses. They are often of different
releases, and the newer can be much faster: on this project's Zen 4
machine numpy's ran the single-thread GEMMs of most convolution layers
faster than scipy's (benchmarks/blas_backends.py, results/blas.md).

So the kernels call the newer of the two pthreads OpenBLAS builds, through
its Fortran sgemm/dgemm entry points found by name (the same affixes
threadpoolctl uses), after checking a few products against scipy's. Any
doubt (not OpenBLAS, an OpenMP-threaded build, a symbol missing, a wrong
check) keeps scipy's. CONVCORE_BLAS=scipy or =numpy forces one (numpy's
only if it passes the same checks).
"""
import ctypes
import os
import threading

import numpy as np

_lock = threading.Lock()
_chosen = None  # the threadpoolctl controller of the BLAS in use


def _under(lib, package):
    """Whether a library file ships with `package` (its dir or NAME.libs)."""
    pkg_dir = os.path.dirname(os.path.abspath(package.__file__))
    path = os.path.abspath(lib.filepath)
    return path.startswith(pkg_dir + os.sep) or path.startswith(pkg_dir + ".")


def _version(lib):
    parts = []
    for p in str(lib.version or "").split("."):
        if not p.isdigit():
            break
        parts.append(int(p))
    return tuple(parts)


def _fortran_gemms(lib):
    """(sgemm, dgemm, ilp64, sgemv, dgemv): the Fortran routines' addresses
    in an OpenBLAS and its integer width, or None."""
    try:
        prefix, suffix = lib._find_affixes()
        dll = lib.dynlib
        config = getattr(dll, f"{prefix}openblas_get_config{suffix}")
        config.restype = ctypes.c_char_p
        ilp64 = b"USE64BITINT" in (config() or b"")
        fns = [getattr(dll, f"{prefix}{name}_{suffix}")
               for name in ("sgemm", "dgemm", "sgemv", "dgemv")]
    except (AttributeError, TypeError, OSError):
        return None
    s, d, sv, dv = (ctypes.cast(f, ctypes.c_void_p).value for f in fns)
    return s, d, ilp64, sv, dv


def _agrees(blas):
    """Products through the newly routed GEMM equal float64 references
    (every transpose pair, odd sizes, both precisions)."""
    rng = np.random.default_rng(12345)
    for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-12)):
        for ta in (False, True):
            for tb, (m, n, k) in ((False, (37, 29, 53)), (True, (37, 29, 53)),
                                  (False, (1, 29, 53)), (True, (1, 29, 53))):
                a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
                b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
                c = rng.standard_normal((m, n)).astype(dtype)
                ref = 0.5 * ((a.T if ta else a).astype(np.float64)
                             @ (b.T if tb else b).astype(np.float64)) + 2.0 * c
                blas.gemm_py(ta, tb, 0.5, a, b, 2.0, c, 1)
                if not np.allclose(c, ref, rtol=tol, atol=tol * 10):
                    return False
    return True


def select():
    """Route the kernels' GEMMs (once) and return the controller of the
    BLAS they now call (None when threadpoolctl finds none)."""
    global _chosen
    if _chosen is not None:
        return _chosen
    with _lock:
        if _chosen is None:
            _chosen = _select()
    return _chosen


def _select():
    import scipy
    from threadpoolctl import ThreadpoolController
    from convcore._kernels import blas
    libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    scipy_libs = [lib for lib in libs if _under(lib, scipy)]
    numpy_libs = [lib for lib in libs if _under(lib, np)]
    fallback = scipy_libs[0] if scipy_libs else (
        [lib for lib in libs if lib not in numpy_libs] or libs or [None])[0]
    want = os.environ.get("CONVCORE_BLAS", "auto").strip().lower()
    if want == "scipy" or not numpy_libs:
        return fallback
    ours = numpy_libs[0]
    if ours.internal_api != "openblas" or getattr(ours, "threading_layer", "") == "openmp":
        return fallback
    if want != "numpy" and fallback is not None and fallback.internal_api == "openblas" \
            and _version(ours) <= _version(fallback):
        return fallback  # not newer: the supported path
    gemms = _fortran_gemms(ours)
    if gemms is None:
        return fallback
    blas.use_external(*gemms)
    if not _agrees(blas):
        blas.use_external(0, 0, False)
        return fallback
    return ours


def describe():
    """One line for `convcore info`."""
    lib = select()
    if lib is None:
        return "unknown"
    return f"{lib.internal_api} {lib.version} ({os.path.basename(lib.filepath)})"
