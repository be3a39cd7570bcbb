"""Build the example downstream extension against the installed convcore.

    pip install --no-build-isolation .        # or
    python setup.py build_ext --inplace

convcore must be importable at build time (its .pxd files are the
interface), hence --no-build-isolation. Every *.pyx here is one module.
Set DOWNSTREAM_NO_OPENMP=1 for a compiler without OpenMP: the prange loops
then run serially.
"""
import glob
import os
import sys

import convcore
from Cython.Build import cythonize
from setuptools import Extension, setup

if os.environ.get("DOWNSTREAM_NO_OPENMP") or sys.platform == "darwin":
    openmp = []
elif sys.platform == "win32":
    openmp = ["/openmp"]
else:
    openmp = ["-fopenmp"]

extensions = [
    Extension(
        os.path.splitext(path)[0],
        [path],
        include_dirs=[convcore.get_include()],
        extra_compile_args=openmp,
        extra_link_args=[] if sys.platform == "win32" else openmp,
    )
    for path in sorted(glob.glob("*.pyx"))
]

setup(
    name="convcore-downstream-example",
    version="0.1.0",
    ext_modules=cythonize(
        extensions,
        include_path=[convcore.get_include()],
        compiler_directives={"language_level": 3, "boundscheck": False,
                             "wraparound": False},
    ),
)
