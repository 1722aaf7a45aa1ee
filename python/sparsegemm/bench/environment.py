"""The process environment the benchmark needs, and the facts about the machine it reports.

Two settings are read once, when a process starts or a runtime loads, so the CLI
and the benchmark scripts re-execute themselves once with :data:`TIMING_ENV` set
(keeping any value the user set):

* Idle thread pools keep spinning after a call (torch's libgomp, MKL's libiomp,
  OpenBLAS's pthreads); on a small machine the next contender from another
  runtime then loses milliseconds per call. The runtimes read their spin
  settings when they load, which happens as soon as ``sparsegemm`` (numpy,
  libgomp) is imported.
* glibc's allocator hands freed memory back to the OS (trimming the heap, or
  unmapping blocks above its mmap threshold), so the next call faults its
  buffers in again, a page at a time. Whether it does depends on the order
  earlier buffers were freed in: on a VM at about 2 us a fault, a ResNet
  bottleneck's time in one process moved between 1.3 and 4.9 ms with 0 to
  1,500 faults a call, for dense torch and sparsegemm alike. Keeping freed
  memory (as jemalloc and tcmalloc do, and as PyTorch's CPU tuning guide
  advises) makes every contender's time repeatable. ld.so reads these tunables
  at process start; other C libraries ignore them.

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

#: Set (unless the user set them) before the process starts: see the module docstring.
TIMING_ENV = {
    "KMP_BLOCKTIME": "1",  # MKL/libiomp: spin 1 ms after a parallel region, not 200 ms
    "OPENBLAS_THREAD_TIMEOUT": "20",  # OpenBLAS: spin 2**20 cycles (well under a millisecond)
    # libgomp (torch's and ours): spin about 0.1-0.5 ms, not the default 300k
    # iterations (milliseconds). PASSIVE would make every call pay a wake-up,
    # which counts for calls of microseconds (see benchmarks/README.md for the
    # floors scripts of millisecond layers, which are run with it).
    "GOMP_SPINCOUNT": "10000",
    # glibc: keep up to 1 GiB of freed heap, and serve blocks up to 32 MiB (its
    # largest mmap threshold) from the heap, so no call faults in pages a
    # previous call gave back.
    "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432",
}
_REEXEC_MARK = "SPARSEGEMM_BENCH_REEXEC"


def missing_timing_env() -> dict[str, str]:
    """The :data:`TIMING_ENV` entries not yet in the environment."""
    return {k: v for k, v in TIMING_ENV.items() if k not in os.environ}


def reexec_with_timing_env(command: list[str]) -> None:
    """Replace this process by ``command`` (argv, program first) with :data:`TIMING_ENV` set.

    Returns without doing anything if the settings are already there, if this
    process is already the re-executed one, or where ``os.execv`` is unavailable.
    """
    missing = missing_timing_env()
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
        "timing_env": {k: os.environ.get(k) for k in TIMING_ENV},
        "timing_env_applied": not missing_timing_env(),
        "affinity": thread_affinity(),
        "last_level_cache": dict(zip(("bytes", "source"), last_level_cache_bytes())),
    }


def numpy_blas_summary(metadata: dict[str, Any]) -> str:
    """'openblas 0.3.31, kernel SkylakeX' for numpy's BLAS, from :func:`machine_metadata`."""
    for blas in metadata["sparsegemm"].get("numpy_blas", []):
        return f"{blas['library']} {blas['version']}, kernel {blas['kernel']}"
    return "unknown (install threadpoolctl)"
