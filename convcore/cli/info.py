"""`convcore info`: what this installation runs with."""
from __future__ import annotations

import platform
import argparse
import sys
from typing import Any, Dict, List

import numpy as np


# numpy's names for the same features, old (<= 2.3) and grouped (>= 2.4:
# x86-64 micro-architecture levels), as numpy.show_config(mode="dicts")
# reports them under "SIMD Extensions".
_NUMPY_SIMD_NAMES = {
    "sse2": ("SSE2", "X86_V2"), "avx": ("AVX", "X86_V3"), "avx2": ("AVX2", "X86_V3"),
    "fma": ("FMA3", "X86_V3"), "avx512f": ("AVX512F", "X86_V4"),
    "neon": ("NEON", "ASIMD"), "asimd": ("ASIMD",),
}


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> List[str]:
    """SIMD features of this CPU that matter to the kernels: from the
    `cpuinfo` file (Linux), else from numpy's public runtime report; an
    empty list when neither says (`convcore info` prints "unknown")."""
    wanted = tuple(_NUMPY_SIMD_NAMES)
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    try:
        simd = np.show_config(mode="dicts").get("SIMD Extensions", {})
    except Exception:  # an older numpy without mode=, or a build without the report
        return []
    have = set(simd.get("baseline", [])) | set(simd.get("found", []))
    return [w for w in wanted if have.intersection(_NUMPY_SIMD_NAMES[w])]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mpi_info() -> Dict[str, Any]:
    """MPI as convcore.distributed sees it: the library and the world size
    (joining the job when started by mpiexec, without initialising MPI
    otherwise), or the install command when mpi4py is missing."""
    from convcore._runtime import mpi as _mpi
    library = _mpi.probe_library()
    if library is None:
        return {"available": False, "library": None, "world_size": _mpi.launched_size(),
                "rank": 0, "hint": _mpi.INSTALL_HINT}
    if _mpi.launched_size() > 1:
        _mpi.init()
    return {"available": True, "library": library, "world_size": _mpi.world_size(),
            "rank": _mpi.rank(), "hint": None}


def info_dict() -> Dict[str, Any]:
    import convcore
    from convcore._runtime import omp_runtime as _omp_runtime
    from convcore._runtime import blas_pools as _blas_pools
    from convcore._runtime import threads as _threads
    from convcore._kernels import openmp_info

    build = openmp_info.build_info()
    _threads._kernel_knobs()  # picks the kernels' BLAS and registers its pools
    return {
        "version": convcore.__version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "compiler": build["compiler"],
        "flags": build["flags"],
        "march_native": build["march_native"],
        "simd_clones": build["simd_clones"],
        "openmp": build["openmp"],
        "threads": convcore.get_num_threads(),
        "omp_max_threads": openmp_info.omp_max_threads(),
        "omp_runtime": _omp_runtime.state(),
        "blas_pools": _blas_pools.state(),
        "blas": [
            {k: b.get(k) for k in ("internal_api", "prefix", "version",
                                   "num_threads", "threading_layer", "filepath")}
            for b in _threads.blas_info()
        ],
        "cpu": cpu_name(),
        "simd": cpu_features(),
        "algorithms": list(convcore.conv_algorithms()),
        "mpi": mpi_info(),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print as JSON")


def run(args: argparse.Namespace) -> int:
    info = info_dict()
    if info["mpi"]["rank"] != 0:  # under mpiexec: one report, from rank 0
        return 0
    if args.json:
        import json
        print(json.dumps(info, indent=2))
        return 0
    print(f"convcore {info['version']} (Python {info['python']}, numpy {info['numpy']})")
    print(f"compiler      {info['compiler']}  flags: {info['flags']}")
    print(f"-march=native {'yes' if info['march_native'] else 'no (set CONVCORE_NATIVE=1 at build to opt in)'}")
    print(f"AVX2 clones   {'yes: depthwise and batch-norm row loops also built for x86-64-v3, picked at load' if info['simd_clones'] else 'no'}")
    from convcore import get_flush_denormal
    print(f"denormals     {'flushed to zero' if get_flush_denormal() else 'kept (convcore.set_flush_denormal(True) flushes them)'}")
    if info["openmp"]:
        print(f"OpenMP        on, convcore threads {info['threads']} "
              f"(OpenMP max {info['omp_max_threads']}); the BLAS runs on one thread "
              f"under them")
        from convcore._runtime import omp_runtime as _omp_runtime
        from convcore._runtime import threads as _threads
        for line in _omp_runtime.describe():
            print(f"              {line}")
        if info["threads"] > 1:
            print(f"              a parallel region costs "
                  f"{_threads.region_cost(info['threads']) * 1e6:.0f} us here; calls that "
                  f"save less than twice that run on one thread "
                  f"({_threads.REGION_ENV} sets it)")
    else:
        print("OpenMP        OFF: kernels run single-threaded (the compiler had no "
              "working OpenMP at build time)")
    for b in info["blas"]:
        print(f"BLAS          {b['internal_api']} {b['version']} ({b['threading_layer']}), "
              f"{b['num_threads']} threads, {b['filepath']}")
    from convcore._runtime import blas_pools as _blas_pools
    print(f"              {_blas_pools.describe(info['blas_pools'])}")
    print(f"CPU           {info['cpu']}; SIMD: {' '.join(info['simd']) or 'unknown'}")
    print(f"algorithms    {', '.join(info['algorithms'])}")
    mpi = info["mpi"]
    if mpi["available"]:
        print(f"MPI           {mpi['library']}; world size {mpi['world_size']} "
              f"(convcore.distributed, `mpiexec -n N convcore train --distributed`)")
    else:
        print(f"MPI           not installed (world size 1): {mpi['hint']}")
    return 0
