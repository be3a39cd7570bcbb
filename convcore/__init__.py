"""convcore: a CPU convolution engine for training CNNs.

    floor 5  cli, bench                     convcore train | bench | info
    floor 4  models, data, training, metrics
    floor 3  nn, optim, init                layers with explicit backward
    floor 2  functional (F), algorithms     checks, shapes, dispatch
    floor 1  _kernels                       Cython + OpenMP + BLAS, nogil
"""
import os

__version__ = "0.1.0"

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
from convcore import _fork  # noqa: E402,F401  (single-threaded kernels after fork)
