"""convcore.set_flush_denormal: FTZ/DAZ in the calling thread and the
OpenMP pool, off by default, reversible."""
import numpy as np
import pytest

import convcore
from convcore._kernels import fpenv, openmp_info
from convcore.functional import conv2d

pytestmark = pytest.mark.skipif(not fpenv.supported(), reason="no FTZ/DAZ controls on this CPU")

TINY = np.float32(1e-39)  # a float32 denormal


@pytest.fixture
def restore():
    threads = convcore.get_num_threads()
    yield
    convcore.set_flush_denormal(False)
    convcore.set_num_threads(threads)


def _denormal_conv(algorithm):
    # Large enough to run on every thread (kernel_threads' grain).
    x = np.full((4, 8, 16, 16), TINY, np.float32)
    w = np.ones((8, 8, 3, 3), np.float32)
    return conv2d(x, w, None, padding=1, algorithm=algorithm)


def test_off_by_default_keeps_denormals():
    assert convcore.get_flush_denormal() is False
    assert not fpenv.get_ftz()
    y = _denormal_conv("direct")
    assert y[0, 0, 5, 5] == pytest.approx(72 * 1e-39, rel=1e-3)


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "winograd"])
def test_on_flushes_in_every_algorithm(algorithm, restore):
    assert convcore.set_flush_denormal(True) is True
    assert convcore.get_flush_denormal() is True
    assert fpenv.get_ftz()
    assert np.all(_denormal_conv(algorithm) == 0)
    assert convcore.set_flush_denormal(False) is True
    assert np.all(_denormal_conv(algorithm) > 0)


@pytest.mark.skipif(not openmp_info.openmp_enabled(), reason="serial build")
def test_pool_threads_follow_including_new_ones(restore):
    convcore.set_num_threads(1)
    convcore.set_flush_denormal(True)
    convcore.set_num_threads(2)
    assert fpenv.pool_ftz(2) == [True, True]
    convcore.set_flush_denormal(False)
    assert fpenv.pool_ftz(2) == [False, False]


def test_mode_must_be_bool():
    with pytest.raises(TypeError, match="set_flush_denormal: mode must be a bool, got int"):
        convcore.set_flush_denormal(1)
