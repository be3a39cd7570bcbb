"""Sizes no index can address or no machine can hold are refused with
ValueError/MemoryError before anything is allocated or any kernel runs."""
import types

import numpy as np
import pytest

import convcore.functional as F
from convcore.utils import validation as _validation
from convcore.utils.validation import SSIZE_MAX, available_memory, check_allocation

TIB = 2**40


class _NoAllocation(types.SimpleNamespace):
    """Stands in for a functional module's `np`: any allocation fails the test."""

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, *a, **k):
        if np.prod(shape, dtype=object) > 2**20:  # bias placeholders are fine
            raise AssertionError(f"allocated {shape} before refusing")
        return np.empty(shape, *a, **k)

    zeros = empty


@pytest.fixture
def no_allocation(monkeypatch):
    import convcore.functional.conv as conv
    import convcore.functional.pooling as pooling
    for mod in (conv, pooling):
        monkeypatch.setattr(mod, "np", _NoAllocation())


def test_check_allocation_counts_exactly_and_refuses():
    assert check_allocation("f", ((2, 3), np.float32), (4, np.int64)) == 2 * 3 * 4 + 32
    with pytest.raises(ValueError, match=r"f: output.*2\*\*63-1"):
        check_allocation("f", ((2**40, 2**40), np.float32))
    with pytest.raises(MemoryError, match=r"f: output and scratch would need 4398046511104 bytes"):
        check_allocation("f", ((TIB,), np.float32))


def test_available_memory_is_a_plausible_byte_count():
    avail = available_memory()
    assert avail is None or 2**20 < avail < 2**60


def test_conv_output_beyond_memory_is_a_memory_error(no_allocation):
    x = np.ones((1, 1, 1, 1), np.float32)
    w = np.ones((64, 1, 1, 1), np.float32)
    # 40001 x 40001 pixels x 64 channels: 410 GB of output.
    with pytest.raises(MemoryError, match=r"conv2d: .* \d+ bytes"):
        F.conv2d(x, w, padding=20000, algorithm="direct")


def test_conv_output_pixels_beyond_int32_is_a_value_error(no_allocation):
    x = np.ones((1, 1, 1, 1), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="2\\*\\*31-1"):
        F.conv2d(x, w, padding=2**20)


def test_im2col_scratch_counts_too(monkeypatch):
    # Output 12001^2 floats (0.58 GB) fits in the memory left; with the
    # column stripe (~1 MiB per thread) on top it does not: refused.
    x = np.ones((1, 64, 1, 1), np.float32)
    w = np.ones((1, 64, 1, 1), np.float32)
    output = 12001 * 12001 * 4
    monkeypatch.setattr(_validation, "available_memory", lambda: output + 1024)
    with pytest.raises(MemoryError, match="conv2d"):
        F.conv2d(x, w, padding=6000, algorithm="im2col")


def test_conv_backward_counts_its_scratch(monkeypatch):
    # 8 images: the weight gradient is summed in 8 partial copies of grad_w
    # (8 x 205 MB). grad_x and grad_w fit in the memory left; with the
    # partials on top they do not: refused, not attempted.
    x = np.zeros((8, 1024, 7, 7), np.float32)
    w = np.zeros((1024, 1024, 7, 7), np.float32)
    gy = np.zeros((8, 1024, 1, 1), np.float32)
    outputs = (x.size + w.size + 1024) * 4
    monkeypatch.setattr(_validation, "available_memory", lambda: outputs + 2**20)
    with pytest.raises(MemoryError, match="conv2d_backward: .* bytes"):
        F.conv2d_backward(gy, x, w, algorithm="im2col")


@pytest.mark.parametrize("value", [2**31, 2**63, 10**30])
@pytest.mark.parametrize("arg", ["stride", "padding", "dilation"])
def test_geometry_beyond_int32_is_refused(arg, value):
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=f"conv2d: {arg} must be at most 2\\*\\*31-1"):
        F.conv2d(x, w, **{arg: value})
    with pytest.raises(ValueError, match=f"max_pool2d: {arg} must be at most"):
        F.max_pool2d(x, 1, **{arg: value})


def test_adaptive_pool_huge_output_size(no_allocation):
    x = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(MemoryError, match=r"adaptive_avg_pool2d: .* bytes"):
        F.adaptive_avg_pool2d(x, (10**6, 10**6))
    with pytest.raises(ValueError, match="adaptive_max_pool2d: .*2\\*\\*63-1"):
        F.adaptive_max_pool2d(x, (2**31, 2**40), return_indices=True)


def test_pool_backward_huge_input_shape(no_allocation):
    gy = np.ones((1, 1, 1, 1), np.float32)
    idx = np.zeros((1, 1, 1, 1), np.int64)
    with pytest.raises(MemoryError, match="max_pool2d_backward"):
        F.max_pool2d_backward(gy, idx, (1, 1, 10**6, 10**6))
    with pytest.raises(MemoryError, match="adaptive_avg_pool2d_backward"):
        F.adaptive_avg_pool2d_backward(gy, (1, 1, 10**6, 10**6))
    gy = np.ones((1, 1, 513, 513), np.float32)
    with pytest.raises(ValueError, match="avg_pool2d_backward: .*2\\*\\*63-1"):
        F.avg_pool2d_backward(gy, (1, 1, 2**40, 2**40), 1, stride=2**31 - 1)


def test_lrn_size_beyond_ssize_t():
    x = np.ones((1, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="local_response_norm: size"):
        F.local_response_norm(x, SSIZE_MAX + 1)
    # Huge but representable: the window clips at the channels, as torch.
    y = F.local_response_norm(x, 2**40)
    assert np.isfinite(y).all()


def test_memory_limit_is_read_from_the_system(monkeypatch):
    monkeypatch.setattr(_validation, "available_memory", lambda: 2**28)
    with pytest.raises(MemoryError, match="268435456 bytes"):
        check_allocation("f", ((2**27,), np.float32))
    assert check_allocation("f", ((2**20,), np.float32)) == 2**22


def test_small_calls_do_not_query_memory(monkeypatch):
    def boom():
        raise AssertionError("queried /proc/meminfo for a small call")
    monkeypatch.setattr(_validation, "available_memory", boom)
    F.conv2d(np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 2, 2), np.float32))


@pytest.mark.parametrize("x_shape, w_shape, padding, groups", [
    ((1, 3, 7, 7), (8, 3, 3, 3), 1, 1),
    ((4, 32, 20, 20), (32, 32, 3, 3), 1, 1),
    ((9, 16, 33, 17), (16, 8, 3, 3), 2, 2),
    ((2, 8, 10, 10), (8, 1, 5, 5), 2, 8),
    ((3, 16, 9, 9), (24, 16, 1, 1), 0, 1),
])
def test_memory_bound_covers_each_algorithms_own_scratch(x_shape, w_shape, padding, groups):
    """The refusal counts an upper bound of what the algorithms allocate."""
    from convcore.algorithms import _REGISTRY, supported_algorithms
    from convcore.functional._conv_spec import conv_spec
    from convcore.functional.conv import _check_memory
    for dtype in (np.float32, np.float64):
        spec = conv_spec(x_shape, w_shape, dtype, 1, padding, 1, groups)
        for name in supported_algorithms(spec)[:-1]:
            algo = _REGISTRY[name]
            for backward, outputs in ((False, [spec.out_shape]), (True, [x_shape, w_shape])):
                out_bytes = sum(np.prod(s) for s in outputs) * np.dtype(dtype).itemsize
                bound = _check_memory(algo, spec, "t", outputs, backward) - out_bytes
                assert bound >= algo.scratch_bytes(spec, backward), (name, backward)
