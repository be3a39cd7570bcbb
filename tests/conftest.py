"""Fixtures shared by the whole suite."""
import os

import numpy as np
import pytest

# The kernels' thread count depends on the work only (GRAIN), not on what a
# parallel region costs on this machine when measured: the tests that reach
# the multi-threaded paths with small shapes (GRAIN set to 1) then do reach
# them. tests/runtime/test_threads.py checks the measured rule itself.
os.environ.setdefault("CONVCORE_REGION_US", "0")


@pytest.fixture
def rng():
    """A seeded generator: every test sees the same numbers on every run."""
    return np.random.default_rng(20261123)


def pytest_report_header(config):
    import convcore
    from convcore._kernels import openmp_info
    return (f"convcore {convcore.__version__} from {convcore.__file__}; "
            f"OpenMP {'on' if openmp_info.openmp_enabled() else 'off'}, "
            f"{convcore.get_num_threads()} threads")
