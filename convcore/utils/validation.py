"""Argument checks shared by the functional ops, the layers and the
training code: one place for dtype, ndim, int-pair and output-size rules,
so conv, pooling and both backwards speak the same language. Errors name
the argument and show the shapes. Public, as sklearn.utils.validation:
code outside convcore may use these checks too."""
from __future__ import annotations

import math
import numbers
import os
import sys
from typing import Any, Optional, Tuple, Union

import numpy as np
from numpy.typing import DTypeLike

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(a: Any, name: str, ndim: Union[int, Tuple[int, ...], None] = None,
                   dtype: Optional[DTypeLike] = None, fn: str = "convcore") -> np.ndarray:
    """Return `a` as a C-contiguous float32/float64 ndarray, never modifying
    it (a copy only when it is not contiguous). `dtype`, when given, is the
    dtype `a` must already have (e.g. the input's, for a weight)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{fn}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{fn}: {name} must be float32 or float64, got dtype {a.dtype} "
            f"(shape {a.shape})")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(
            f"{fn}: {name} has dtype {a.dtype} but the input has dtype "
            f"{np.dtype(dtype)}; convert one of them (shape {a.shape})")
    if ndim is not None and a.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(
            f"{fn}: {name} must be {ndim}-D, got {a.ndim}-D array of shape {a.shape}")
    # np.ascontiguousarray would turn a 0-D array into 1-D.
    return a if a.flags.c_contiguous else a.copy(order="C")


def check_int(v: Any, name: str, minimum: Optional[int] = None, fn: str = "convcore") -> int:
    """An int argument (numpy ints too, never bool or float)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {v}")
    return v


def check_flag(v: Any, name: str, fn: str = "convcore") -> bool:
    """A bool argument (numpy bools too); a string or an array would
    otherwise be read as True without a word."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be a bool, got {v!r}")
    return bool(v)


def exact_geometry(v: Any) -> bool:
    """True for an int (not a bool), a str, or a pair of ints: geometry
    arguments whose equality means the same checked value, so they may key
    a cache of checked results (functional.conv's plans, pooling's specs).
    2.0 == 2 and True == 1 in Python, so a float or a bool must not find the
    entry of an int: it takes the full path and gets its TypeError. Other
    types (numpy ints, lists) simply take the full path too."""
    t = type(v)
    if t is tuple:
        return len(v) == 2 and type(v[0]) is int and type(v[1]) is int
    return t is int or t is str


# Window geometry (kernel, stride, padding, dilation) reaches the kernels as
# Py_ssize_t and is multiplied there (dilation * (kernel - 1), o * stride +
# offset): capped at 2**31-1, no such product or sum can overflow 64 bits.
GEOMETRY_MAX = 2**31 - 1


def int_pair(v: Any, name: str, minimum: Optional[int] = None, fn: str = "convcore"
             ) -> Tuple[int, int]:
    """int or (h, w) pair of ints -> (h, w), each >= minimum and <= 2**31-1."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{fn}: {name} must be an int or a pair (h, w), got {v!r}")
        pair = (check_int(v[0], name, minimum, fn), check_int(v[1], name, minimum, fn))
    else:
        pair = (check_int(v, name, minimum, fn),) * 2
    if max(pair) > GEOMETRY_MAX:
        raise ValueError(f"{fn}: {name} must be at most 2**31-1, got {v!r}")
    return pair


def output_size(in_size: int, kernel: int, stride: int, pad_total: int, dilation: int,
                ceil_mode: bool = False, pad_before: Optional[int] = None) -> int:
    """Output length along one axis of a convolution or pooling window.

    out = floor_or_ceil((in + pad_total - dilation*(kernel-1) - 1) / stride) + 1;
    with ceil_mode the last window must start inside the input or the
    leading padding (PyTorch's rule), so it is dropped otherwise. Returns
    a value < 1 when the window does not fit; the caller raises."""
    span = dilation * (kernel - 1) + 1
    room = in_size + pad_total - span
    if room < 0:
        return 0
    if ceil_mode:
        out = -(-room // stride) + 1
        before = pad_total // 2 if pad_before is None else pad_before
        if (out - 1) * stride >= in_size + before:
            out -= 1
        return out
    return room // stride + 1


# Kernel index arithmetic is Py_ssize_t; no array (or scratch buffer) may
# hold more bytes than it can count, or an offset would wrap around.
SSIZE_MAX = sys.maxsize
# Smaller requests skip the memory query (a read of /proc/meminfo): they
# cannot be what exhausts the machine, and tiny calls stay fast.
_QUERY_MEMORY_ABOVE = 1 << 27


def available_memory() -> Optional[int]:
    """Bytes one call may still allocate: MemAvailable + SwapFree, capped by
    a cgroup v2 memory.max; physical memory where /proc is missing; None
    when unknown. np.empty alone is no guard: with overcommit a huge
    allocation succeeds and the kernel's first writes summon the OOM killer."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f
                    if line.split(":")[0] in ("MemAvailable", "SwapFree")}
        if "MemAvailable" in info:
            avail = info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit.isdigit():
            avail = min(avail, int(limit))
    except OSError:
        pass
    return avail


def check_allocation(fn: str, *arrays: Tuple[Any, DTypeLike],
                     what: str = "output and scratch") -> int:
    """Refuse a call whose outputs and scratch could not be indexed or held,
    before anything is allocated or any kernel runs.

    arrays: (shape_or_count, dtype) pairs; products are exact Python ints,
    so nothing here can overflow. Raises ValueError when one buffer's bytes
    exceed Py_ssize_t (index arithmetic would wrap) and MemoryError, with
    the size in bytes, when the total exceeds available_memory()."""
    total = 0
    for shape, dtype in arrays:
        count = shape if isinstance(shape, numbers.Integral) else math.prod(shape)
        nbytes = int(count) * np.dtype(dtype).itemsize
        if nbytes > SSIZE_MAX:
            raise ValueError(
                f"{fn}: {what} of shape {shape} would take {nbytes} bytes, more "
                f"than a 64-bit index can address (2**63-1)")
        total += nbytes
    if total > _QUERY_MEMORY_ABOVE:
        avail = available_memory()
        if total > SSIZE_MAX or (avail is not None and total > avail):
            raise MemoryError(
                f"{fn}: {what} would need {total} bytes ({total / 2**30:.1f} GiB) "
                f"but only {avail} bytes ({(avail or 0) / 2**30:.1f} GiB) of memory "
                f"are available; use a smaller batch or input")
    return total
