"""The native (cimport) API: convcore/native.pxd and its kernels.

Builds the example downstream package (examples/downstream) in a temporary
directory against the convcore under test, then checks that its own prange
loops over convcore's nogil kernels give convcore.functional's results, and
that a module compiled for another kernel ABI is refused.
"""
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import convcore
from convcore._kernels import native, openmp_info

F = convcore.F
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "downstream"
PACKAGE_DIR = Path(convcore.get_include()) / "convcore"


def _compiler_missing():
    """Why the downstream build cannot run here, or None."""
    for module in ("Cython", "setuptools"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install '.[test]')"
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC")
    if sys.platform != "win32" and (not cc or shutil.which(shlex.split(cc)[0]) is None):
        return f"no C compiler ({cc!r} not found)"
    return None


# A module compiled against a (pretend) newer convcore: its compiled-in ABI
# version is one more than the installed one's.
STALE_ABI_PYX = """
from convcore.native cimport CONVCORE_ABI_VERSION, check_abi
check_abi(CONVCORE_ABI_VERSION + 1)
"""


def _load(name, directory):
    spec = importlib.util.spec_from_file_location(
        name, directory / (name + sysconfig.get_config_var("EXT_SUFFIX")))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The example package compiled in a temporary directory, plus the
    stale-ABI module; returns that directory."""
    why = _compiler_missing()
    if why:
        pytest.skip(f"cannot build the downstream example: {why}")
    build = tmp_path_factory.mktemp("downstream")
    for path in EXAMPLE.iterdir():
        if path.suffix in (".py", ".pyx", ".toml"):
            shutil.copy(path, build)
    (build / "stale_abi.pyx").write_text(STALE_ABI_PYX)
    env = dict(os.environ)
    # The build must see the convcore under test (installed or in place).
    env["PYTHONPATH"] = os.pathsep.join(
        [convcore.get_include()] + [p for p in [env.get("PYTHONPATH")] if p])
    env["CFLAGS"] = (env.get("CFLAGS", "") + " -O1").strip()  # a quick build
    if not openmp_info.openmp_enabled():
        env["DOWNSTREAM_NO_OPENMP"] = "1"
    out = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                         cwd=build, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, f"downstream build failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return build


@pytest.fixture(scope="module")
def dk(built):
    return _load("downstream_kernels", built)


# -- installation ------------------------------------------------------------

def test_get_include_holds_the_package():
    assert PACKAGE_DIR.resolve() == Path(convcore.__file__).resolve().parent
    assert (PACKAGE_DIR / "native.pxd").is_file()


def _cimported(pxd):
    """Modules a .pxd cimports (from X cimport ... / cimport X)."""
    text = pxd.read_text()
    return set(re.findall(r"^\s*from\s+(convcore[\w.]*)\s+cimport", text, re.M)
               + re.findall(r"^\s*cimport\s+(convcore[\w.]*)", text, re.M))


def test_every_pxd_the_api_needs_is_installed():
    """native.pxd and every convcore .pxd it reaches, transitively, are in
    get_include() (an installed copy ships them as package data)."""
    seen, todo = set(), ["convcore.native"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        pxd = Path(convcore.get_include(), *module.split(".")).with_suffix(".pxd")
        assert pxd.is_file(), f"{pxd} is missing from convcore.get_include()"
        todo.extend(_cimported(pxd))
    assert {"convcore._kernels.native", "convcore._kernels.conv_params"} <= seen


def test_installed_copy_has_every_source_pxd():
    """Each .pxd of the source tree is in the convcore under test (same
    files when testing in place; package data when installed)."""
    source = Path(__file__).resolve().parents[2] / "convcore"
    wanted = {p.relative_to(source) for p in source.rglob("*.pxd")}
    assert wanted, "no .pxd files in the source tree"
    missing = [str(p) for p in sorted(wanted) if not (PACKAGE_DIR / p).is_file()]
    assert not missing, f"not installed with convcore: {missing}"


def test_abi_version_python_level():
    assert isinstance(convcore.__abi_version__, int) and convcore.__abi_version__ >= 1
    assert convcore.__abi_version__ == native.ABI_VERSION
    native.check_abi_version(convcore.__abi_version__)  # the same: accepted
    bad = convcore.__abi_version__ + 1
    with pytest.raises(ImportError, match=rf"ABI version {bad}\b.*ABI version {convcore.__abi_version__}\b"):
        native.check_abi_version(bad)


def test_compiled_entry_points_are_the_table():
    """The build writes one float and one double function per row of
    native_entry_points.ENTRY_POINTS, and no other typed entry point."""
    from convcore._kernels import native_entry_points as table

    exported = native.__pyx_capi__
    typed = {name for name in exported if name.endswith(("_f32", "_f64"))}
    assert typed == set(table.typed_names())
    for name in typed:
        signature = repr(exported[name]).split('"')[1]
        element = "float" if name.endswith("_f32") else "double"
        other = "double" if element == "float" else "float"
        assert element in signature, (name, signature)
        # Only the batch-norm and LRN statistics are double in _f32 too.
        assert other not in signature or other == "double", (name, signature)


# -- the downstream build ----------------------------------------------------

def test_downstream_compiled_against_this_abi(dk):
    assert dk.COMPILED_ABI_VERSION == convcore.__abi_version__


def test_wrong_abi_is_refused(built):
    v = convcore.__abi_version__
    with pytest.raises(ImportError) as info:
        _load("stale_abi", built)
    message = str(info.value)
    assert f"compiled against convcore kernel ABI version {v + 1}" in message
    assert f"kernel ABI version {v};" in message
    assert "rebuild" in message


# (x shape, K, kernel, stride, padding, dilation, groups)
GEOMETRIES = [
    ((3, 4, 7, 6), 6, (3, 3), 2, 1, 1, 2),       # groups, stride, padding
    ((2, 3, 5, 5), 5, (1, 1), 1, 0, 1, 1),       # pointwise: no im2col
    ((4, 4, 6, 7), 4, (3, 3), 1, 2, 2, 4),       # depthwise, dilated
    ((1, 2, 6, 5), 3, (2, 3), (2, 1), (0, 1), (1, 2), 1),  # batch 1, asymmetric
    ((9, 2, 1, 1), 3, (1, 1), 1, 0, 1, 1),       # 1x1 images, odd batch
]
ALGORITHMS = [("gemm", "im2col"), ("direct", "direct")]


def _tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm,convcore_algorithm", ALGORITHMS)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_downstream_conv_equals_functional(dk, rng, dtype, algorithm,
                                           convcore_algorithm, geometry):
    x_shape, K, (R, S), stride, padding, dilation, groups = geometry
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((K, x_shape[1] // groups, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    args = (stride, padding, dilation, groups)
    x0, w0 = x.copy(), w.copy()

    y = dk.conv2d(x, w, b, *args, algorithm=algorithm, num_threads=2)
    expected = F.conv2d(x, w, b, *args, algorithm=convcore_algorithm)
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_allclose(y, expected, **_tolerance(dtype))
    y_nobias = dk.conv2d(x, w, None, *args, algorithm=algorithm)
    np.testing.assert_allclose(y_nobias, expected - b[:, None, None], **_tolerance(dtype))

    grad_y = rng.standard_normal(y.shape).astype(dtype)
    gx, gw = dk.conv2d_backward(grad_y, x, w, *args, algorithm=algorithm, num_threads=2)
    ex, ew, _ = F.conv2d_backward(grad_y, x, w, *args, algorithm=convcore_algorithm)
    assert gx.dtype == gw.dtype == dtype
    np.testing.assert_allclose(gx, ex, **_tolerance(dtype))
    np.testing.assert_allclose(gw, ew, **_tolerance(dtype))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


def test_downstream_refuses_a_kernel_larger_than_the_input(dk):
    # conv2d_output_size gives 0 (not a wrapped-around size) when the
    # window does not fit: 4 - 4 - 1 = -1 must not round up to an output of 1
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="larger than the padded input"):
        dk.conv2d(x, np.zeros((1, 1, 5, 5)), stride=2)


@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
def test_downstream_thread_counts_agree(dk, rng, algorithm):
    x = rng.standard_normal((5, 4, 8, 8))
    w = rng.standard_normal((6, 4, 3, 3))
    grad_y = rng.standard_normal((5, 6, 8, 8))
    one = dk.conv2d_backward(grad_y, x, w, 1, 1, algorithm=algorithm, num_threads=1)
    two = dk.conv2d_backward(grad_y, x, w, 1, 1, algorithm=algorithm, num_threads=2)
    np.testing.assert_allclose(one[0], two[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(one[1], two[1], rtol=1e-12, atol=1e-12)


def _exact_or_close(actual, expected, dtype):
    assert actual.dtype == dtype and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, **_tolerance(dtype))


# (kernel, stride, padding, dilation) windows, and adaptive output sizes
POOL_WINDOWS = [(3, 2, 1, 1), ((2, 3), None, 0, 1), (3, 1, 1, 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", POOL_WINDOWS)
def test_downstream_max_pool_equals_functional(dk, rng, dtype, window):
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    kernel, stride, padding, dilation = window
    y, idx = dk.pool2d("max", x, window)
    ey, eidx = F.max_pool2d(x, kernel, stride, padding, dilation, return_indices=True)
    _exact_or_close(y, ey, dtype)
    np.testing.assert_array_equal(idx, eidx)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    gx = dk.pool2d_backward("max", grad_y, idx, x.shape, window)
    _exact_or_close(gx, F.max_pool2d_backward(grad_y, eidx, x.shape), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", POOL_WINDOWS[:2])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_downstream_avg_pool_equals_functional(dk, rng, dtype, window, count_include_pad):
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    kernel, stride, padding, _ = window
    y, idx = dk.pool2d("avg", x, window, count_include_pad=count_include_pad)
    assert idx is None
    _exact_or_close(y, F.avg_pool2d(x, kernel, stride, padding,
                                    count_include_pad=count_include_pad), dtype)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    gx = dk.pool2d_backward("avg", grad_y, None, x.shape, window,
                            count_include_pad=count_include_pad)
    _exact_or_close(gx, F.avg_pool2d_backward(grad_y, x.shape, kernel, stride, padding,
                                              count_include_pad=count_include_pad), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output_size", [(3, 4), (1, 1), (7, 5)])
def test_downstream_adaptive_pools_equal_functional(dk, rng, dtype, output_size):
    x = rng.standard_normal((2, 3, 7, 5)).astype(dtype)
    y, _ = dk.pool2d("adaptive_avg", x, output_size)
    _exact_or_close(y, F.adaptive_avg_pool2d(x, output_size), dtype)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    _exact_or_close(dk.pool2d_backward("adaptive_avg", grad_y, None, x.shape, output_size),
                    F.adaptive_avg_pool2d_backward(grad_y, x.shape), dtype)
    y, idx = dk.pool2d("adaptive_max", x, output_size)
    ey, eidx = F.adaptive_max_pool2d(x, output_size, return_indices=True)
    _exact_or_close(y, ey, dtype)
    np.testing.assert_array_equal(idx, eidx)
    _exact_or_close(dk.pool2d_backward("adaptive_max", grad_y, idx, x.shape, output_size),
                    F.adaptive_max_pool2d_backward(grad_y, eidx, x.shape), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (5, 2), (1, 3, 7)])
def test_downstream_batch_norm_equals_functional(dk, rng, dtype, shape):
    # Offset from zero: the two-pass statistics must still be accurate.
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    w = rng.standard_normal(shape[1]).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    ncs = (shape[0], shape[1], -1)
    y, mean, invstd = dk.batch_norm_train(x.reshape(ncs), w, b, 1e-5)
    ey, emean, einvstd = F.batch_norm(x, None, None, w, b, training=True,
                                      eps=1e-5, return_stats=True)
    _exact_or_close(y.reshape(shape), ey, dtype)
    # the kernels' statistics are double; functional returns them in x's dtype
    np.testing.assert_allclose(mean.astype(dtype), emean, **_tolerance(dtype))
    np.testing.assert_allclose(invstd.astype(dtype), einvstd, **_tolerance(dtype))

    grad_y = rng.standard_normal(shape).astype(dtype)
    gx, gw, gb = dk.batch_norm_train_backward(grad_y.reshape(ncs), x.reshape(ncs),
                                              emean, einvstd, w)
    ex, ew, eb = F.batch_norm_backward(grad_y, x, emean, einvstd, w, training=True)
    loose = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else _tolerance(dtype)
    np.testing.assert_allclose(gx.reshape(shape), ex, **loose)
    np.testing.assert_allclose(gw, ew, **loose)
    np.testing.assert_allclose(gb, eb, **loose)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,size", [((2, 7, 9, 11), 5), ((3, 4, 1, 1), 2), ((1, 3, 130), 4)])
def test_downstream_lrn_equals_functional(dk, rng, dtype, shape, size):
    # 9*11 = 99 and 130 positions: several 64-position blocks, a partial last one
    x = rng.standard_normal(shape).astype(dtype)
    ncs = (shape[0], shape[1], -1)
    args = (size, 1e-2, 0.75, 2.0)
    y = dk.local_response_norm(x.reshape(ncs), *args)
    _exact_or_close(y.reshape(shape), F.local_response_norm(x, *args), dtype)
    grad_y = rng.standard_normal(shape).astype(dtype)
    gx = dk.local_response_norm(x.reshape(ncs), *args, grad_y=grad_y.reshape(ncs))
    _exact_or_close(gx.reshape(shape), F.local_response_norm_backward(grad_y, x, *args), dtype)
