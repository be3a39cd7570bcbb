"""Argument checks shared by every functional op: one place for dtype,
ndim, int-pair and output-size rules, so conv, pooling and both backwards
speak the same language. Errors name the argument and show the shapes."""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(a, name, ndim=None, dtype=None, fn="convcore"):
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


def check_int(v, name, minimum=None, fn="convcore"):
    """An int argument (numpy ints too, never bool or float)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {v}")
    return v


def check_flag(v, name, fn="convcore"):
    """A bool argument (numpy bools too); a string or an array would
    otherwise be read as True without a word."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be a bool, got {v!r}")
    return bool(v)


def int_pair(v, name, minimum=None, fn="convcore"):
    """int or (h, w) pair of ints -> (h, w), each >= minimum."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{fn}: {name} must be an int or a pair (h, w), got {v!r}")
        return tuple(check_int(e, name, minimum, fn) for e in v)
    x = check_int(v, name, minimum, fn)
    return (x, x)


def output_size(in_size, kernel, stride, pad_total, dilation, ceil_mode=False,
                pad_before=None):
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
