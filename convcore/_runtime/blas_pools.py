"""Idle BLAS thread pools: stopped when a convcore call starts.

A pthreads OpenBLAS (numpy's and scipy's wheels) runs a threaded call on
its own pool of workers, which then spin for about 0.1 s (2^28 cycles,
OPENBLAS_THREAD_TIMEOUT, fixed when the library loads) waiting for the
next call. A user's numpy matmul between two convcore calls thus leaves a
worker spinning on one of the cores convcore's OpenMP threads are about to
use: two-thread kernels then run at one-thread speed until the worker
sleeps (benchmarks/results/blas_pools.md).

So the first kernel call after such a matmul that goes parallel stops
the pools that are up (threads.kernel_threads calls blas.stop_idle_pools):
OpenBLAS's own `blas_thread_shutdown_`, which it runs itself before every
fork(), joins the workers; its next threaded call starts them again, as
after a fork.
The user's numpy/scipy calls keep their thread count and their results;
the next threaded one pays the start of its workers, convcore's call the
join, and only when a pool was up.

Stopping a pool while another thread is inside a call of it would hang
both, so pools are stopped only when no other Python thread can be in a
BLAS call: every other live thread is one known never to call it
(convcore's OpenMP park, tqdm's monitor, a Jupyter kernel's service
threads). With any other thread alive (a data-loader thread, a user's
worker) nothing is stopped, and convcore runs as before.
CONVCORE_STOP_BLAS_POOLS=0 turns it off.
"""
import ctypes
import os
import threading
from typing import List

ENV = "CONVCORE_STOP_BLAS_POOLS"

# Threads known never to call a BLAS, by class (module, name): tqdm's
# progress-bar monitor, and a Jupyter kernel's service threads (messages,
# heartbeat, output pipes, history). A kernel's subshell threads, which run
# user code, are not among them. A plain threading.Thread counts by the
# class of the method it runs (ipykernel's IOPub thread and output-pipe
# watchers).
_QUIET_THREAD_CLASSES = frozenset({
    ("tqdm._monitor", "TMonitor"),
    ("ipykernel.heartbeat", "Heartbeat"),
    ("ipykernel.control", "ControlThread"),
    ("ipykernel.shellchannel", "ShellChannelThread"),
    ("ipykernel.parentpoller", "ParentPollerUnix"),
    ("ipykernel.parentpoller", "ParentPollerWindows"),
    ("ipykernel.iostream", "IOPubThread"),
    ("ipykernel.iostream", "OutStream"),
    ("IPython.core.history", "HistorySavingThread"),
})

_installed: List[str] = []  # file paths of the pools registered with the kernels


def enabled():
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _owner(thread):
    """(module, class name) of what a thread runs: its class, or for a plain
    Thread the class of the bound method it was given as target."""
    cls = type(thread)
    if cls is threading.Thread:
        owner = getattr(getattr(thread, "_target", None), "__self__", None)
        if owner is not None:
            cls = type(owner)
    return cls.__module__, cls.__qualname__


def _quiet(thread):
    from convcore._runtime import omp_runtime
    return thread is omp_runtime._parked or _owner(thread) in _QUIET_THREAD_CLASSES


def no_other_blas_callers():
    """Whether every Python thread but the calling one is known not to call
    a BLAS (the guard blas.stop_idle_pools asks before stopping pools)."""
    me = threading.current_thread()
    try:
        return all(t is me or _quiet(t) for t in threading.enumerate())
    except Exception:  # never let the guard fail a kernel call
        return False


def _symbols(lib):
    """(server flag, shutdown, thread count) addresses of a pthreads
    OpenBLAS, or None. The three are OpenBLAS's own unprefixed symbols."""
    if lib.internal_api != "openblas" or getattr(lib, "threading_layer", "") != "pthreads":
        return None
    try:
        dll = lib.dynlib
        up = ctypes.addressof(ctypes.c_int.in_dll(dll, "blas_server_avail"))
        count = ctypes.addressof(ctypes.c_int.in_dll(dll, "blas_cpu_number"))
        stop = ctypes.cast(dll.blas_thread_shutdown_, ctypes.c_void_p).value
    except (AttributeError, ValueError, OSError):
        return None
    return up, stop, count


def install(libs, kernel_lib):
    """Register the pthreads OpenBLAS pools among `libs` (threadpoolctl
    controllers) with the kernels' BLAS hold; `kernel_lib` is the one the
    kernels call. Runs once, from threads._kernel_knobs."""
    from convcore._kernels import blas
    if not enabled():
        return
    seen = set()
    for lib in libs:
        found = _symbols(lib)
        if found is None or found[0] in seen:
            continue
        seen.add(found[0])
        up, stop, count = found
        blas.add_pool(up, stop, count if lib.filepath == kernel_lib.filepath else 0)
        _installed.append(lib.filepath)
    if _installed:
        blas.set_stop_guard(no_other_blas_callers)


def state():
    """dict for `convcore info`."""
    from convcore._kernels import blas
    return {"enabled": enabled(), "pools": list(_installed), "stops": blas.pool_stops()}


def describe(st=None):
    """A line for `convcore info` from state() (taken now when not given)."""
    st = state() if st is None else st
    if not st["enabled"]:
        return f"idle BLAS pools: left spinning ({ENV}=0)"
    if not st["pools"]:
        return "idle BLAS pools: none convcore can stop (not a pthreads OpenBLAS)"
    return (f"idle BLAS pools: {len(st['pools'])} pthreads OpenBLAS pool(s) stopped at a "
            f"kernel call when up and no other thread may be in them "
            f"({st['stops']} stops so far)")
