"""The process environment the benchmark needs, and the facts about the machine it reports.

Idle thread pools keep spinning after a call (torch's libgomp, MKL's libiomp,
OpenBLAS's pthreads); on a small machine the next contender from another
runtime then loses milliseconds per call. The runtimes read their spin settings
when they load, which happens as soon as ``sparsegemm`` (numpy, libgomp) is
imported, so the CLI re-executes itself once with :data:`SPIN_ENV` set.
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are deliberately left alone: they change
which kernel OpenBLAS runs, not how long it waits.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any

from ..timing import last_level_cache_bytes

#: Set (unless the user set them) before numpy, torch and sparsegemm's OpenMP load.
SPIN_ENV = {
    "KMP_BLOCKTIME": "1",  # MKL/libiomp: spin 1 ms after a parallel region, not 200 ms
    "OPENBLAS_THREAD_TIMEOUT": "20",  # OpenBLAS: spin 2**20 cycles (well under a millisecond)
    # libgomp (torch's and ours): spin about 0.1-0.5 ms, not the default 300k
    # iterations (milliseconds). PASSIVE would make every call pay a wake-up.
    "GOMP_SPINCOUNT": "10000",
}
_REEXEC_MARK = "SPARSEGEMM_BENCH_REEXEC"


def missing_spin_env() -> dict[str, str]:
    """The :data:`SPIN_ENV` entries not yet in the environment."""
    return {k: v for k, v in SPIN_ENV.items() if k not in os.environ}


def reexec_with_spin_env(command: list[str]) -> None:
    """Replace this process by ``command`` (argv, program first) with :data:`SPIN_ENV` set.

    Returns without doing anything if the settings are already there, if this
    process is already the re-executed one, or where ``os.execv`` is unavailable.
    """
    missing = missing_spin_env()
    if not missing or os.environ.get(_REEXEC_MARK) or os.name != "posix":
        return
    os.environ.update(missing)
    os.environ[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def thread_affinity() -> dict[str, Any]:
    """The CPUs this process may run on and the OpenMP binding settings."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    names = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY")
    return {"cpus": cpus, **{name: os.environ.get(name) for name in names}}


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def blas_info() -> list[dict[str, Any]]:
    """Every BLAS/OpenMP pool loaded in this process, as threadpoolctl sees it."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    return [
        {
            "user_api": info.get("user_api"),
            "library": info.get("internal_api"),
            "version": info.get("version"),
            "kernel": info.get("architecture"),
            "threads": info.get("num_threads"),
            "path": info.get("filepath"),
        }
        for info in threadpoolctl.threadpool_info()
    ]


def machine_metadata(threads: int) -> dict[str, Any]:
    """Facts a reader needs to judge the numbers: CPU, ISA, threads, libraries, BLAS."""
    import numpy
    import scipy

    import sparsegemm

    config = sparsegemm.show_config(print_out=False)
    torch_info: dict[str, Any] | None = None
    if _version("torch") is not None:
        import torch

        torch_info = {
            "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "mkl": bool(torch.backends.mkl.is_available()),
            "parallel_info": torch.__config__.parallel_info().splitlines()[:12],
        }
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": threads,
        "sparsegemm": config,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "torch": torch_info,
        "threadpools": blas_info(),
        "spin_env": {k: os.environ.get(k) for k in SPIN_ENV},
        "spin_env_applied": not missing_spin_env(),
        "affinity": thread_affinity(),
        "last_level_cache": dict(zip(("bytes", "source"), last_level_cache_bytes())),
    }


def numpy_blas_summary(metadata: dict[str, Any]) -> str:
    """'openblas 0.3.31, kernel SkylakeX' for numpy's BLAS, from :func:`machine_metadata`."""
    for blas in metadata["sparsegemm"].get("numpy_blas", []):
        return f"{blas['library']} {blas['version']}, kernel {blas['kernel']}"
    return "unknown (install threadpoolctl)"
