"""The OpenMP runtime's wait policy, whoever loaded it first.

A GNU OpenMP (libgomp) thread that finishes its share of a parallel region
waits for the next one: spinning for about 3 ms by default (forever with
OMP_WAIT_POLICY=ACTIVE), or asleep with OMP_WAIT_POLICY=PASSIVE. libgomp
reads these variables once, when it is loaded. convcore sets PASSIVE at its
import when the user has not chosen, but a library imported before convcore
(PyTorch ships its own libgomp.so.1, which convcore's kernels then share)
has loaded the runtime already, and the variable comes too late.

Spinning waits are what a whole network cannot afford on a shared or busy
machine: between two layers the Python code of the layer runs on the main
thread while the other threads spin, and a spinning thread that holds a
core another process (or another pool) needs stalls the next region for a
time slice: a forward of a small network slowed several-fold when torch
had loaded the runtime first (benchmarks/results/spin_waits.md).

libgomp's own rule (documented under GOMP_SPINCOUNT): when it manages more
threads than there are CPUs, waits spin only 100 times (1000 with ACTIVE)
before they sleep. So when the runtime was loaded before convcore, or the
user asked for spinning, convcore parks one Python thread holding a team
as large as the machine's CPUs in its own pool: those threads sleep for
good and cost nothing, and every wait in the process becomes a short spin,
which is what PASSIVE would have given. It affects every user of that
runtime in the process (PyTorch included), as setting PASSIVE before it
loaded would have. CONVCORE_OMP_THROTTLE=0 turns it off.
"""
import os
import threading
from typing import Optional

# Set by convcore/__init__.py before the kernels load.
loaded_before_convcore: Optional[bool] = None
user_wait_policy: Optional[str] = None
_parked = None


_RUNTIME_NAMES = ("libgomp", "libomp", "libiomp")


def runtimes():
    """Paths of the OpenMP runtimes mapped into this process, in the order
    they were mapped (Linux: /proc/self/maps; elsewhere an empty list)."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6:
                    name = os.path.basename(parts[-1])
                    if name.startswith(_RUNTIME_NAMES) and parts[-1] not in found:
                        found.append(parts[-1])
    except OSError:
        pass
    return found


def runtime_loaded():
    """The first GNU OpenMP runtime mapped into this process, or None."""
    return next((p for p in runtimes() if os.path.basename(p).startswith("libgomp")), None)


def _user_wants_spinning():
    policy = os.environ.get("OMP_WAIT_POLICY", "").strip().lower()
    spin = os.environ.get("GOMP_SPINCOUNT", "").strip().lower()
    return policy == "active" or (spin not in ("", "0") and policy != "passive")


def _policy_is_passive():
    """Whether the runtime started with PASSIVE (or GOMP_SPINCOUNT=0),
    set by the user or by convcore's import, before it was loaded."""
    if loaded_before_convcore:
        return False  # read whatever was in force then: assume spinning
    return not _user_wants_spinning()


def throttle_spinning():
    """Park a pool (see the module docstring) unless waits already sleep."""
    global _parked
    from convcore._kernels import openmp_info
    if (_parked is not None or not openmp_info.openmp_enabled()
            or os.environ.get("CONVCORE_OMP_THROTTLE", "1").strip() in ("0", "false", "no")
            or _policy_is_passive()):
        return False
    started = threading.Event()
    team = max(2, openmp_info.omp_num_procs())

    def park():
        openmp_info.hold_team(team)
        started.set()
        threading.Event().wait()  # forever: the pool lives with this thread

    _parked = threading.Thread(target=park, name="convcore-omp-park", daemon=True)
    _parked.start()
    started.wait(10)
    return True


def state():
    """dict for `convcore info`: the runtimes in the process, whether the
    one convcore shares was loaded before it, and what convcore did about
    its wait policy."""
    return {
        "runtimes": runtimes(),
        "loaded_before_convcore": bool(loaded_before_convcore),
        "user_wait_policy": user_wait_policy,
        "spinning_throttled": _parked is not None,
    }


def describe():
    """Lines for `convcore info` and the README's advice."""
    st = state()
    lines = []
    if st["loaded_before_convcore"]:
        lines.append("OpenMP runtime loaded before convcore (e.g. by torch): its wait "
                     "policy was fixed then; "
                     + ("convcore throttles its spinning (a parked pool)"
                        if st["spinning_throttled"] else "spinning not throttled"))
    elif st["spinning_throttled"]:
        lines.append("OMP_WAIT_POLICY/GOMP_SPINCOUNT ask for spinning: convcore throttles "
                     "it (a parked pool; CONVCORE_OMP_THROTTLE=0 keeps it)")
    if len(st["runtimes"]) > 1:
        lines.append(f"{len(st['runtimes'])} OpenMP runtimes in this process "
                     f"({', '.join(os.path.basename(p) for p in st['runtimes'])}): their "
                     "pools do not share threads; set OMP_WAIT_POLICY=PASSIVE (and "
                     "KMP_BLOCKTIME=0 for LLVM/Intel ones) before Python starts so that "
                     "the idle ones sleep")
    return lines
