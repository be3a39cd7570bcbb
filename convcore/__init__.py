"""convcore: a CPU convolution engine for training CNNs.

Each floor imports only from the floors below it (tests/test_floors.py):

    floor 5  cli/, bench/, demo           convcore train | bench | info
    floor 4  models/, data/, training/,   the zoo, data sets, fit(),
             distributed/                 data-parallel training over MPI
             onnx/                        ONNX export and import
    floor 3  nn/, optim/, init,           layers with explicit backward,
             serialization, testing       optimisers, state files, gradcheck
    floor 2  functional/ (F),             checks, shapes, dispatch,
             algorithms/                  algorithm registry and auto choice
    runtime  _runtime/, utils/            threads, fork, denormals, no_grad,
                                          BLAS choice, MPI; argument checks
    floor 1  _kernels/                    Cython + OpenMP + BLAS, nogil
"""
import os

__version__ = "0.1.0"

# OpenMP threads that wait at a barrier sleep instead of spinning, unless
# the user chose otherwise. On a machine shared with other work, a spinning
# thread burns the time slice its sibling needs to finish, and a training
# run on 2 threads took several times longer than on 1
# (benchmarks/results/spin_waits.md); on an idle machine the cost is a
# futex wake-up per parallel region, which the grain size keeps rare.
# Must be set before the OpenMP runtime loads, i.e. before the kernels.
# If another library loaded the runtime first, it is too late for that:
# _omp_runtime then throttles the spinning another way (see there).
from convcore._runtime import omp_runtime as _omp_runtime  # noqa: E402

_omp_runtime.loaded_before_convcore = _omp_runtime.runtime_loaded() is not None
_omp_runtime.user_wait_policy = os.environ.get("OMP_WAIT_POLICY")
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from convcore import functional
from convcore import functional as F
from convcore._runtime.grad_mode import is_grad_enabled, no_grad
from convcore._runtime.threads import get_num_threads, set_num_threads
from convcore._runtime.denormals import get_flush_denormal, set_flush_denormal
from convcore.algorithms import conv_algorithms
from convcore.algorithms.autotune import tune
# Kernel ABI of the native (cimport) API, convcore/native.pxd; downstream
# extensions compare it with the CONVCORE_ABI_VERSION they were built with.
from convcore._kernels.native import ABI_VERSION as __abi_version__


def get_include() -> str:
    """Directory that holds the `convcore` package with its public .pxd
    files (convcore/native.pxd, convcore/_kernels/*.pxd), for downstream
    Cython extensions: pass it as cythonize's include_path (and the
    extension's include_dirs), then `from convcore.native cimport ...`."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


__all__ = [
    "F", "functional", "conv_algorithms", "get_num_threads", "set_num_threads",
    "set_flush_denormal", "get_flush_denormal",
    "no_grad", "is_grad_enabled", "get_include", "tune", "__version__",
]

# Floor 3: layers, initialisers, optimisers, state files.
from convcore import init, nn, optim
from convcore.serialization import load, save
from convcore.init import manual_seed

__all__ += ["nn", "optim", "init", "save", "load", "manual_seed"]

# Floor 3 too: gradcheck for layers written by hand.
from convcore import testing

__all__ += ["testing"]

# Floor 4: the model zoo and the training loop.
from convcore import models, training

__all__ += ["models", "training"]

from convcore._runtime import fork as _fork  # noqa: E402,F401  (single-threaded kernels after fork)

_omp_runtime.throttle_spinning()
