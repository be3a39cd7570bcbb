"""The thin MPI layer: process group state and collectives on NumPy arrays.

It sits low, beside the runtime helpers, so that nn.SyncBatchNorm (floor 3)
can reduce statistics and convcore.distributed (floor 4) can build data
parallelism on it. The engine is MPI through mpi4py; nothing here speaks a
protocol of its own. mpi4py is imported only by init(), so a process that
never trains on several ranks never loads an MPI library.

Every collective uses mpi4py's buffer calls (upper-case Allreduce, Bcast,
Allgather, Iallreduce) on contiguous arrays: no pickling on the hot path.
The same calls must be made in the same order on every rank, as with any
MPI program; the callers in convcore keep that order by construction.

World size 1 needs no MPI at all: init() outside mpiexec without mpi4py
installed sets rank 0 of 1, and every collective is then the identity.

Faults: init() installs an excepthook (as `python -m mpi4py` does) so that
an uncaught exception on one rank prints which rank failed and calls
MPI_Abort, which ends every rank of the job with a non-zero exit instead of
leaving the others waiting in a collective. A rank that dies outright (a
signal, the OOM killer) is noticed by the launcher (mpiexec), which ends
the others and names the rank.
"""
from __future__ import annotations

import atexit
import os
import platform
import sys
import time
import traceback
from typing import Any, List, NoReturn, Optional, Tuple, TypeVar

import numpy as np

_T = TypeVar("_T")

INSTALL_HINT = 'pip install "convcore[mpi]"  (mpi4py and the mpich wheel, which brings mpiexec)'

# Environment variables by which launchers tell a process it is one rank of
# several: MPICH/Hydra and Intel MPI (PMI_SIZE), Open MPI, Slurm's srun.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")

_OPS = ("sum", "mean", "max", "min", "prod")
# Seconds a failing rank waits between writing its report and MPI_Abort
# (fail_job).
ABORT_GRACE_SECONDS = 0.5


class _State:
    comm: Any = None     # mpi4py.MPI.Comm, None for world size 1 without MPI
    MPI: Any = None      # the mpi4py.MPI module once loaded
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    processes: Tuple[Tuple[str, int], ...] = ()   # (host, pid) of every rank, in rank order
    initialized = False


_state = _State()


def launched_size() -> int:
    """World size the launcher announced in the environment (1 if none):
    lets code tell 'started by mpiexec -n 4' before initialising MPI."""
    for var in _LAUNCHER_SIZE_VARS:
        value = os.environ.get(var)
        if value and value.strip().isdigit():
            return int(value)
    return 1


def _load_mpi4py():
    """mpi4py.MPI without initialising MPI (convcore calls MPI_Init itself
    in init(), so that `convcore info` can name the library in a process
    that never joins a job)."""
    import mpi4py
    if "mpi4py.MPI" not in sys.modules:
        mpi4py.rc.initialize = False
        mpi4py.rc.finalize = False
    from mpi4py import MPI
    return MPI


def probe_library() -> Optional[str]:
    """The MPI library's version line without initialising MPI, or None
    when mpi4py or its library is missing."""
    if _state.MPI is not None:
        return _version_line(_state.MPI)
    try:
        return _version_line(_load_mpi4py())
    except (ImportError, RuntimeError):
        return None


def _version_line(MPI):
    return " ".join(MPI.Get_library_version().strip().splitlines()[0].split())


def _import_mpi():
    try:
        MPI = _load_mpi4py()
    except ImportError as exc:
        raise RuntimeError(
            f"convcore.distributed: MPI is not available ({exc}). Install it with: "
            f"{INSTALL_HINT}") from exc
    except RuntimeError as exc:  # mpi4py present, no MPI library to load
        raise RuntimeError(
            f"convcore.distributed: mpi4py found no MPI library ({exc}). Install one "
            f"with: {INSTALL_HINT}") from exc
    return MPI


def init() -> int:
    """Join the job: rank, world size and local rank from MPI. Unless
    set_num_threads or OMP_NUM_THREADS chose them, convcore's threads on
    each rank become the machine's cores divided by its ranks there.

    Started by mpiexec/srun, this needs mpi4py (a clear error names the
    install command when it is missing). Started alone, it uses MPI when
    mpi4py is installed and otherwise sets rank 0 of 1 without it.
    Calling it again is harmless. Returns the world size.
    """
    if _state.initialized:
        return _state.size
    launched = launched_size()
    try:
        MPI = _import_mpi()
    except RuntimeError:
        if launched > 1:
            raise
        _state.initialized = True
        return 1
    if not MPI.Is_initialized():
        MPI.Init_thread()
        atexit.register(_finalize)
    comm = MPI.COMM_WORLD
    _state.MPI, _state.comm = MPI, comm
    _state.rank, _state.size = comm.Get_rank(), comm.Get_size()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=_state.rank)
    _state.local_rank, _state.local_size = node.Get_rank(), node.Get_size()
    node.Free()
    _state.processes = tuple(comm.allgather((platform.node(), os.getpid())))
    _state.initialized = True
    from convcore._runtime import threads as _threads
    _threads.share_cores(_state.local_size)
    if _state.size > 1:
        _install_abort_on_error()
    return _state.size


def _finalize():
    MPI = _state.MPI
    if MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized():
        MPI.Finalize()


def is_initialized() -> bool:
    return _state.initialized


def rank() -> int:
    """This process's rank (0 when not initialised)."""
    return _state.rank


def world_size() -> int:
    """Number of ranks (1 when not initialised or without MPI)."""
    return _state.size


def local_rank() -> int:
    """Rank among the processes on this machine (for threads per rank)."""
    return _state.local_rank


def local_size() -> int:
    return _state.local_size


def active() -> bool:
    """True when there are other ranks to talk to."""
    return _state.size > 1


def mpi_library() -> Optional[str]:
    """The MPI library's version line, or None without MPI (for `convcore info`)."""
    return None if _state.MPI is None else _version_line(_state.MPI)


def describe_processes() -> str:
    """'rank 0: pid 123 on host-a, rank 1: ...': to match a launcher's
    'BAD TERMINATION ... PID n RUNNING AT host' to the rank that died."""
    return ", ".join(f"rank {r}: pid {pid} on {host}"
                     for r, (host, pid) in enumerate(_state.processes))


def barrier() -> None:
    if _state.comm is not None:
        _state.comm.Barrier()


def abort(code: int = 1) -> NoReturn:
    """End every rank of the job (MPI_Abort); exits this process alone
    without MPI."""
    if _state.comm is not None and _state.size > 1:
        _state.comm.Abort(code)
    os._exit(code)


def fail_job(exc: BaseException, where: str = "") -> NoReturn:
    """Print the traceback of `exc` and which rank failed (`where`: e.g.
    " in fit()"), then end the whole job (abort())."""
    # One write of the whole report, formatted first: a traceback printed
    # line by line was seen cut after its first line when the launcher tore
    # the job down, losing the line that names the rank.
    report = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    report += (f"convcore.distributed: rank {_state.rank} of {_state.size} failed"
               f"{where}: {type(exc).__name__}: {exc}; aborting the job\n")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.write(sys.stderr.fileno(), report.encode("utf-8", "replace"))
    except (OSError, ValueError, AttributeError):  # no real stderr descriptor
        sys.stderr.write(report)
        sys.stderr.flush()
    if _state.comm is not None and _state.size > 1:
        # The report sits in the pipe to the launcher, which stops forwarding
        # output once MPI_Abort tears the job down: the whole report was seen
        # lost (an empty stderr from the job). Give it a moment to get out.
        time.sleep(ABORT_GRACE_SECONDS)
    abort(130 if isinstance(exc, KeyboardInterrupt) else 1)


def _install_abort_on_error():
    sys.excepthook = lambda kind, value, tb: fail_job(value)


# -- collectives --------------------------------------------------------------
def _buffer(array, fn, name="array"):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(array).__name__}")
    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(f"{fn}: {name} must be C-contiguous and writeable (it is reduced "
                         f"in place), got shape {array.shape} with flags "
                         f"contiguous={array.flags.c_contiguous} "
                         f"writeable={array.flags.writeable}")
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{fn}: {name} must be a numeric array, got dtype {array.dtype}")
    return array


def all_reduce(array: np.ndarray, op: str = "sum") -> np.ndarray:
    """Reduce `array` over all ranks, in place, and return it ("sum",
    "mean", "max", "min", "prod"), as torch.distributed.all_reduce."""
    fn = "all_reduce"
    _buffer(array, fn)
    if op not in _OPS:
        raise ValueError(f"{fn}: op must be one of {', '.join(_OPS)}, got {op!r}")
    if op == "mean" and array.dtype.kind != "f":
        raise TypeError(f"{fn}: op='mean' needs a float array, got dtype {array.dtype}")
    if _state.size == 1:
        return array
    MPI = _state.MPI
    mpi_op = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN,
              "prod": MPI.PROD}[op]
    _state.comm.Allreduce(MPI.IN_PLACE, array, op=mpi_op)
    if op == "mean":
        array /= _state.size
    return array


def broadcast(array: np.ndarray, root: int = 0) -> np.ndarray:
    """Overwrite `array` on every rank with root's values, in place; returns it."""
    fn = "broadcast"
    _buffer(array, fn)
    _check_root(root, fn)
    if _state.size > 1:
        _state.comm.Bcast(array, root=root)
    return array


def _check_root(root, fn):
    if not isinstance(root, (int, np.integer)) or not 0 <= root < _state.size:
        raise ValueError(f"{fn}: root must be a rank in 0..{_state.size - 1}, got {root!r}")


def all_gather(array: np.ndarray) -> np.ndarray:
    """A new array of shape (world_size, *array.shape) holding every rank's
    `array` (same shape and dtype on every rank), in rank order."""
    fn = "all_gather"
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{fn}: array must be a numpy.ndarray, got {type(array).__name__}")
    src = np.ascontiguousarray(array)
    out = np.empty((_state.size,) + src.shape, dtype=src.dtype)
    if _state.size == 1:
        out[0] = src
        return out
    _state.comm.Allgather(src, out)
    return out


def all_gather_object(obj: _T) -> List[_T]:
    """Every rank's small Python object, in rank order (pickled: for setup
    checks such as comparing models, never per step)."""
    if _state.size == 1:
        return [obj]
    return _state.comm.allgather(obj)


def broadcast_object(obj: _T, root: int = 0) -> _T:
    if _state.size == 1:
        return obj
    return _state.comm.bcast(obj, root=root)


class _Done:
    """The handle of a collective that had nothing to wait for."""

    def test(self):
        return True

    def wait(self):
        pass


class Handle:
    """A non-blocking collective in flight: test() polls (and lets MPI make
    progress), wait() blocks until done."""

    __slots__ = ("_request",)

    def __init__(self, request):
        self._request = request

    def test(self):
        return self._request.Test()

    def wait(self):
        self._request.Wait()


def iall_reduce_sum(array):
    """Start summing `array` over all ranks in place (MPI_Iallreduce);
    returns a handle to wait on before reading the array."""
    if _state.size == 1:
        return _Done()
    return Handle(_state.comm.Iallreduce(_state.MPI.IN_PLACE, array, op=_state.MPI.SUM))
