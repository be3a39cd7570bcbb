"""Measured algorithm selection for "auto", cached on disk (opt-in).

With CONVCORE_AUTOTUNE=1, the first convolution of a new shape times every
algorithm that supports it (forward + backward-data + backward-weight, the
cost of one training step) and remembers the fastest; later calls, in this
process and the next ones, reuse the answer:

    select_algorithm(spec) --> measured_choice(spec)
                                 | disabled (default) -> None: the heuristic decides
                                 | in memory / in the JSON cache -> the winner
                                 v otherwise: time candidates once, store, return

The cache is one JSON file, $XDG_CACHE_HOME/convcore/autotune.json (else
~/.cache/convcore/autotune.json; CONVCORE_CACHE_DIR overrides the
directory), keyed by shape, parameters, dtype and thread count, since the
winner depends on all of them. A cache that does not parse is ignored with
a RuntimeWarning and rewritten; an entry timed with a different set of
algorithms is re-timed.

`tune(...)` runs the measurement for explicit shapes (e.g. ahead of
training) and returns the winner whatever the environment variable says.
"""
import json
import os
import tempfile
import threading
import time
import warnings
from typing import Any, Dict

import numpy as np

from convcore._runtime import threads as _threads

ENV_ENABLE = "CONVCORE_AUTOTUNE"
ENV_CACHE_DIR = "CONVCORE_CACHE_DIR"
CACHE_FILE = "autotune.json"
CACHE_FORMAT = 1
REPEATS = 3

_lock = threading.RLock()
_memory: Dict[str, Dict[str, Any]] = {}   # cache path -> {key: entry}, loaded once per path
_local = threading.local()


def enabled():
    """True when CONVCORE_AUTOTUNE is set to 1/true/yes/on."""
    return os.environ.get(ENV_ENABLE, "").strip().lower() in ("1", "true", "yes", "on")


def cache_path():
    """The JSON file holding the measured winners."""
    base = os.environ.get(ENV_CACHE_DIR)
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "convcore")
    return os.path.join(base, CACHE_FILE)


def cache_key(spec, threads=None):
    """Everything the winner depends on: shapes, parameters, dtype, threads."""
    threads = threads or _threads.get_num_threads()
    return (f"x{spec.N}x{spec.C}x{spec.H}x{spec.W}"
            f"|w{spec.K}x{spec.Cg}x{spec.R}x{spec.S}"
            f"|s{spec.stride[0]}x{spec.stride[1]}"
            f"|p{spec.padding[0]}x{spec.padding[1]}t{spec.padding_total[0]}x{spec.padding_total[1]}"
            f"|d{spec.dilation[0]}x{spec.dilation[1]}|g{spec.groups}"
            f"|{np.dtype(spec.dtype).name}|t{threads}")


def candidates(spec):
    """Algorithms (other than "auto") that support this configuration."""
    from convcore.algorithms import conv_algorithms, get_algorithm
    names = []
    for name in conv_algorithms():
        if name == "auto":
            continue
        try:
            get_algorithm(name, spec, "autotune")
        except ValueError:
            continue
        names.append(name)
    return names


def _load(path):
    """{key: entry} from the cache file; {} (with a warning) when corrupt."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        warnings.warn(f"convcore.autotune: ignoring corrupt cache {path} ({exc}); "
                      "it will be rewritten", RuntimeWarning, stacklevel=3)
        return {}
    if (not isinstance(data, dict) or data.get("format") != CACHE_FORMAT
            or not isinstance(data.get("entries"), dict)):
        warnings.warn(f"convcore.autotune: ignoring corrupt cache {path} (unexpected "
                      "structure); it will be rewritten", RuntimeWarning, stacklevel=3)
        return {}
    return {k: v for k, v in data["entries"].items()
            if isinstance(v, dict) and isinstance(v.get("winner"), str)}


def _entries(path):
    if path not in _memory:
        _memory[path] = _load(path)
    return _memory[path]


def _save(path, entries):
    """Write atomically (temp file + rename): a crash or a concurrent
    process never leaves half a file. Unwritable cache: keep it in memory."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".autotune-")
        with os.fdopen(fd, "w") as f:
            json.dump({"format": CACHE_FORMAT, "entries": entries}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"convcore.autotune: cannot write cache {path} ({exc})",
                      RuntimeWarning, stacklevel=3)


def clear_memory():
    """Forget what was loaded, so the next lookup reads the file again."""
    with _lock:
        _memory.clear()


def _padding_arg(spec):
    if spec.padding_total == (2 * spec.padding[0], 2 * spec.padding[1]):
        return spec.padding
    return "same"  # the only source of asymmetric padding in conv2d


def time_algorithms(spec, names, repeats=REPEATS, seed=0):
    """{name: seconds} for forward + backward-data + backward-weight, median
    of `repeats` interleaved rounds after one warm-up call each."""
    from convcore.functional import conv2d, conv2d_backward
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((spec.N, spec.C, spec.H, spec.W)).astype(spec.dtype)
    w = rng.standard_normal((spec.K, spec.Cg, spec.R, spec.S)).astype(spec.dtype)
    gy = rng.standard_normal(spec.out_shape).astype(spec.dtype)
    args = (spec.stride, _padding_arg(spec), spec.dilation, spec.groups)

    def step(name):
        conv2d(x, w, None, *args, algorithm=name)
        conv2d_backward(gy, x, w, *args, algorithm=name, bias=False)

    for name in names:
        step(name)
    samples = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            step(name)
            samples[name].append(time.perf_counter() - t0)
    return {name: float(np.median(s)) for name, s in samples.items()}


def lookup(spec, threads=None):
    """The cached winner for spec, or None."""
    with _lock:
        entry = _entries(cache_path()).get(cache_key(spec, threads))
    if entry is None or entry.get("candidates") != candidates(spec):
        return None
    return entry["winner"]


def tune_spec(spec, force=False):
    """Winner for a checked ConvSpec: from the cache, else measured now
    (at the current thread count) and stored."""
    names = candidates(spec)
    if len(names) == 1:
        return names[0]
    key, path = cache_key(spec), cache_path()
    with _lock:
        entry = _entries(path).get(key)
        if not force and entry is not None and entry.get("candidates") == names:
            return entry["winner"]
        times = time_algorithms(spec, names)
        winner = min(times, key=times.get)
        entries = _entries(path)
        entries[key] = {"winner": winner, "candidates": names,
                        "seconds": times, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        _save(path, entries)
    return winner


def tune(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1,
         dtype=np.float32, force=False):
    """Measure the algorithms for one convolution (shapes as conv2d's input
    and weight) and cache the winner; returns its name. `force` re-times."""
    from convcore.functional._conv_spec import conv_spec
    spec = conv_spec(tuple(x_shape), tuple(w_shape), np.dtype(dtype), stride,
                     padding, dilation, groups, fn="tune")
    return tune_spec(spec, force)


def measured_choice(spec):
    """The hook for algorithms.select_algorithm: the measured winner's name
    when CONVCORE_AUTOTUNE is on, else None (the heuristic decides). Also
    None while a measurement is running (the timing calls name their
    algorithm, but a nested "auto" must not start another tuning) and for
    an empty batch, which has nothing to time."""
    if not enabled() or spec.N == 0 or getattr(_local, "busy", False):
        return None
    _local.busy = True
    try:
        return tune_spec(spec)
    finally:
        _local.busy = False
