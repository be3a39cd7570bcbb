"""convcore: a CPU convolution engine for training CNNs.

    floor 5  cli, bench                     convcore train | bench | info
    floor 4  models, data, training, metrics
    floor 3  nn, optim, init                layers with explicit backward
    floor 2  functional (F), algorithms     checks, shapes, dispatch
    floor 1  _kernels                       Cython + OpenMP + BLAS, nogil
"""
import os

__version__ = "0.1.0"

# OpenMP threads that wait at a barrier sleep instead of spinning, unless
# the user chose otherwise. On a machine shared with other work, a spinning
# thread burns the time slice its sibling needs to finish, and a training
# run on 2 threads took 5x longer than on 1 (measured: `convcore train`
# 16.7 s active vs 3.3 s passive at load 4); on an idle machine the cost is
# a futex wake-up per parallel region, which the grain size keeps rare.
# Must be set before the OpenMP runtime loads, i.e. before the kernels.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from convcore import functional
from convcore import functional as F
from convcore._grad_mode import is_grad_enabled, no_grad
from convcore._threads import get_num_threads, set_num_threads
from convcore.algorithms import conv_algorithms
from convcore.autotune import tune


def get_include():
    """Directory holding convcore's public .pxd files, for downstream Cython
    extensions: add it to `include_dirs` and `cimport convcore._kernels...`."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


__all__ = [
    "F", "functional", "conv_algorithms", "get_num_threads", "set_num_threads",
    "no_grad", "is_grad_enabled", "get_include", "tune", "__version__",
]

# Floor 3: layers, initialisers, optimisers, state files.
from convcore import init, nn, optim
from convcore.serialization import load, save

__all__ += ["nn", "optim", "init", "save", "load"]

# Floor 4: the model zoo and the training loop.
from convcore import models, training

__all__ += ["models", "training"]

from convcore import _fork  # noqa: E402,F401  (single-threaded kernels after fork)
