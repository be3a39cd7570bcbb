"""Arrays for convcore's results: NumPy arrays whose memory, from 1 MiB
up, is reused from call to call (convcore._kernels.buffer_cache says why).

They are ordinary writable, C-ordered NumPy arrays; only their owner is a
buffer_cache.Block rather than the array itself (`a.base`), which hands
the memory back to the cache when the last array or view on it is gone.
The cache keeps at most CONVCORE_BUFFER_CACHE_MB MiB of idle memory
(default 1024; 0 turns it off).
"""
import math
import os
import warnings

import numpy as np

from convcore._kernels import buffer_cache

MIN_BYTES = buffer_cache.MIN_BYTES  # smaller arrays: plain np.empty
DEFAULT_LIMIT_MB = 1024


def _limit_from_environment():
    text = os.environ.get("CONVCORE_BUFFER_CACHE_MB", "").strip()
    try:
        mb = float(text) if text else DEFAULT_LIMIT_MB
        if not math.isfinite(mb):
            raise ValueError(text)
    except ValueError:
        warnings.warn(f"convcore: CONVCORE_BUFFER_CACHE_MB={text!r} is not a number of "
                      f"MiB; using {DEFAULT_LIMIT_MB}", RuntimeWarning, stacklevel=2)
        mb = DEFAULT_LIMIT_MB
    return int(max(mb, 0) * (1 << 20))


buffer_cache.set_limit(_limit_from_environment())


def empty(shape, dtype):
    """np.empty(shape, dtype), C order; from the cache when big enough."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes < MIN_BYTES or buffer_cache.limit() == 0:
        return np.empty(shape, dtype)
    return np.frombuffer(buffer_cache.Block(nbytes), dtype, count).reshape(shape)


def empty_like(a):
    """empty(a.shape, a.dtype)."""
    return empty(a.shape, a.dtype)
