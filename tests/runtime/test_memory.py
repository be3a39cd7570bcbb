"""convcore._runtime.memory and its cache (convcore._kernels.buffer_cache):
result arrays that reuse freed memory, and never one still in use."""
import gc

import numpy as np
import pytest

from convcore import functional as F
from convcore._kernels import buffer_cache
from convcore._runtime import memory

BIG = (4, 64, 32, 32)          # 1 MiB of float32: the smallest cached size


@pytest.fixture
def cache():
    """An empty cache of 64 MiB for the test; the previous limit after."""
    previous = buffer_cache.set_limit(0)
    buffer_cache.set_limit(64 << 20)
    yield
    buffer_cache.set_limit(previous)


def _address(a):
    return a.__array_interface__["data"][0]


def test_arrays_are_plain_writable_c_arrays(cache):
    for dtype in (np.float32, np.float64, np.int64):
        a = memory.empty(BIG, dtype)
        assert a.shape == BIG and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
        a[...] = 3
        assert a.sum() == 3 * a.size


def test_small_arrays_bypass_the_cache(cache):
    a = memory.empty((3, 5), np.float32)
    assert a.flags.owndata
    del a
    assert buffer_cache.idle() == (0, 0)


def test_freed_memory_is_reused_for_the_same_size(cache):
    a = memory.empty(BIG, np.float32)
    where = _address(a)
    del a
    assert buffer_cache.idle() == (1, 1 << 20)
    b = memory.empty(BIG, np.float32)
    assert _address(b) == where
    assert buffer_cache.idle() == (0, 0)
    c = memory.empty((2,) + BIG, np.float32)      # another size: new memory
    assert _address(c) != where


def test_memory_in_use_through_a_view_is_never_handed_out(cache):
    a = memory.empty(BIG, np.float32)
    a[...] = 1
    view = a[1:, ::2]
    del a
    gc.collect()
    assert buffer_cache.idle() == (0, 0)
    b = memory.empty(BIG, np.float32)
    b[...] = 2
    assert (view == 1).all()
    del view
    assert buffer_cache.idle() == (1, 1 << 20)


def test_the_limit_bounds_idle_memory_oldest_out(cache):
    buffer_cache.set_limit(3 << 20)
    arrays = [memory.empty((n,) + BIG, np.float32) for n in (1, 2)]
    del arrays[0]                       # 1 MiB idle
    assert buffer_cache.idle() == (1, 1 << 20)
    del arrays[0]                       # 2 MiB more: 3 MiB, at the limit
    assert buffer_cache.idle() == (2, 3 << 20)
    c = memory.empty((3,) + BIG, np.float32)
    del c                               # 3 MiB: the two older blocks go
    assert buffer_cache.idle() == (1, 3 << 20)
    buffer_cache.set_limit(0)           # off: idle blocks freed now
    assert buffer_cache.idle() == (0, 0)
    a = memory.empty(BIG, np.float32)
    assert a.flags.owndata              # and nothing goes through the cache


def test_a_block_larger_than_the_limit_is_freed(cache):
    buffer_cache.set_limit(2 << 20)
    a = memory.empty((3,) + BIG, np.float32)
    del a
    assert buffer_cache.idle() == (0, 0)


def test_results_from_reused_memory_are_right(cache):
    """A conv and a batch norm twice in a row, the second time on memory
    the first results left: the same values (kernels write every element)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(BIG).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    first = [F.conv2d(x, w, None, 1, 1), F.relu(x)]
    expected = [a.copy() for a in first]
    for a in first:
        a[...] = np.nan                 # what reused memory holds
    del first, a
    assert buffer_cache.idle()[0] >= 2
    again = [F.conv2d(x, w, None, 1, 1), F.relu(x)]
    for got, want in zip(again, expected):
        np.testing.assert_array_equal(got, want)


def test_kernel_scratch_is_reused_memory(cache):
    """Winograd's transformed weights and dU (points x K x C, 37.7 MB at
    512 channels: past glibc's largest heap block, so fresh memory would
    fault in on every call) and the kernels' own scratch (column buffers,
    weight-gradient partials) come from the cache and go back to it: a
    second round of the same calls takes every block the first gave back
    and adds none; results made on reused memory are the same bits."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 128, 8, 8)).astype(np.float32)
    w = (rng.standard_normal((128, 128, 3, 3)) * 0.05).astype(np.float32)

    def run():
        y = F.conv2d(x, w, None, 1, 1, algorithm="winograd")
        grads = F.conv2d_backward(y, x, w, 1, 1, algorithm="winograd")[:2]
        y2 = F.conv2d(x, w, None, 1, 1, algorithm="im2col")
        grads2 = F.conv2d_backward(y2, x, w, 1, 1, algorithm="im2col")[:2]
        return [y, *grads, y2, *grads2]

    first = run()
    blocks, nbytes = buffer_cache.idle()
    assert nbytes >= 2 * 36 * 128 * 128 * 4          # U of each pass, and dU
    again = run()
    assert buffer_cache.idle() == (blocks, nbytes)
    for got, want in zip(again, first):
        np.testing.assert_array_equal(got, want)


def test_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONVCORE_BUFFER_CACHE_MB", "16")
    assert memory._limit_from_environment() == 16 << 20
    monkeypatch.setenv("CONVCORE_BUFFER_CACHE_MB", "0")
    assert memory._limit_from_environment() == 0
    monkeypatch.setenv("CONVCORE_BUFFER_CACHE_MB", "lots")
    with pytest.warns(RuntimeWarning, match="CONVCORE_BUFFER_CACHE_MB"):
        assert memory._limit_from_environment() == memory.DEFAULT_LIMIT_MB << 20
