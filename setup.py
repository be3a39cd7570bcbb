"""Build script for convcore's Cython kernels.

OpenMP is used when the compiler can compile, link *and run* a program with
it (the check scikit-learn's build used); otherwise the kernels build
serially with a loud warning. Environment switches:

CONVCORE_NO_OPENMP=1       build without OpenMP even if it is available
CONVCORE_FAIL_NO_OPENMP=1  make a missing OpenMP a build error
CONVCORE_NATIVE=1          add -march=native (the wheel then only runs on
                           CPUs like the build machine's, so it is opt-in)
CONVCORE_DEBUG=1           -O0 -g and Cython bounds/wraparound checks on
CONVCORE_SANITIZE=1        AddressSanitizer + UndefinedBehaviorSanitizer
CONVCORE_NO_CLONES=1       no AVX2+FMA copies of the hot row loops (GCC on
                           x86-64 Linux makes them, picked at load time)
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Every convcore/_kernels/*.pyx is one extension module.
KERNELS = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join("convcore", "_kernels", "*.pyx"))
)


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _openmp_flags(compiler):
    """Flags that enable OpenMP for this compiler, or None if it has none."""
    if sys.platform == "win32" and compiler.compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin" and "-fopenmp" in os.environ.get("CPPFLAGS", ""):
        # Apple clang: the user supplies -Xpreprocessor -fopenmp and libomp.
        return [], []
    return ["-fopenmp"], ["-fopenmp"]


def _check_openmp(compiler, cflags, ldflags):
    """Compile, link and run a tiny OpenMP program; True when it works."""
    code = textwrap.dedent(
        """
        #include <omp.h>
        #include <stdio.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            printf("%d", n > 0);
            return 0;
        }
        """
    )
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "omp_check.c")
        with open(src, "w") as f:
            f.write(code)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
        exe = os.path.join(tmp, "omp_check")
        compiler.link_executable(objs, exe, extra_postargs=ldflags)
        out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        return out.returncode == 0 and out.stdout.strip() == "1"
    except Exception:  # any compile/link/run failure means "no OpenMP"
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """build_ext that decides OpenMP and optimisation flags per compiler."""

    def build_extensions(self):
        compiler = self.compiler
        msvc = compiler.compiler_type == "msvc"
        debug = _env_flag("CONVCORE_DEBUG")
        sanitize = _env_flag("CONVCORE_SANITIZE")
        if msvc:
            cflags, ldflags = ["/O2"], []
        elif debug or sanitize:
            cflags, ldflags = ["-O1" if sanitize else "-O0", "-g"], []
        else:
            # -O3 turns on the loop vectoriser; no -ffast-math, which would
            # break NaN/Inf propagation that the API promises.
            cflags, ldflags = ["-O3", "-fno-math-errno"], []
        if not msvc:
            # Lets `#pragma omp simd` vectorise chosen reductions even in a
            # build without OpenMP threads (no runtime library needed).
            cflags.append("-fopenmp-simd")
        if sanitize and not msvc:
            san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
            cflags += san
            ldflags += san
        native = _env_flag("CONVCORE_NATIVE")
        if native and not msvc:
            cflags.append("-march=native")

        openmp = False
        if not _env_flag("CONVCORE_NO_OPENMP"):
            omp_c, omp_l = _openmp_flags(compiler)
            if _check_openmp(compiler, omp_c, omp_l):
                openmp = True
                cflags += omp_c
                ldflags += omp_l
        if not openmp:
            if _env_flag("CONVCORE_FAIL_NO_OPENMP"):
                raise RuntimeError("OpenMP is not available and CONVCORE_FAIL_NO_OPENMP is set")
            warnings.warn(
                "\n***\nconvcore: this compiler has no working OpenMP; the kernels "
                "are built single-threaded. `convcore info` will say so.\n***"
            )

        cc = " ".join(compiler.compiler_so[:1]) if hasattr(compiler, "compiler_so") else compiler.compiler_type
        build_flags = " ".join(cflags)
        # The load-time AVX2 copies (simd.h) are redundant with
        # -march=native and get in the way of debugging and sanitizers.
        no_clones = native or debug or sanitize or _env_flag("CONVCORE_NO_CLONES")
        for ext in self.extensions:
            if no_clones:
                ext.define_macros = list(ext.define_macros) + [("CONVCORE_NO_CLONES", "1")]
            ext.extra_compile_args = list(cflags) + list(ext.extra_compile_args)
            ext.extra_link_args = list(ldflags) + list(ext.extra_link_args)
            if ext.name.endswith("openmp_info"):
                # Recorded so `convcore info` can tell users what they run.
                ext.define_macros += [
                    ("CONVCORE_BUILD_CC", '"%s"' % cc.replace('"', "")),
                    ("CONVCORE_BUILD_FLAGS", '"%s"' % build_flags.replace('"', "")),
                    ("CONVCORE_BUILD_NATIVE", "1" if native else "0"),
                ]
        super().build_extensions()


def _extensions():
    from Cython.Build import cythonize

    debug = _env_flag("CONVCORE_DEBUG")
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,
    }
    # The kernels' C lives in convcore/_kernels/*.h, included by package
    # path ("convcore/_kernels/simd.h") from the directory that holds the
    # package, as a downstream build finds it through convcore.get_include().
    headers = sorted(glob.glob(os.path.join("convcore", "_kernels", "*.h")))
    exts = [
        Extension(f"convcore._kernels.{name}", [f"convcore/_kernels/{name}.pyx"],
                  include_dirs=[os.path.dirname(os.path.abspath(__file__))],
                  depends=headers)
        for name in KERNELS
    ]
    return cythonize(exts, compiler_directives=directives, nthreads=int(os.environ.get("CONVCORE_CYTHON_JOBS", "0") or 0))


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExt},
)
