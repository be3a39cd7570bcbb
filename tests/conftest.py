"""Fixtures shared by the whole suite."""
import numpy as np
import pytest


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
