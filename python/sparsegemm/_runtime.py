"""Run-time configuration: the SIMD level the kernels dispatch to and thread counts.

Thread counts resolve like scikit-learn's: an explicit ``num_threads`` argument,
else :func:`set_num_threads`, else the ``SPARSEGEMM_NUM_THREADS`` or
``OMP_NUM_THREADS`` environment variable, else the CPUs this process may run on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator

from . import _core

ISA_NAMES = ("scalar", "avx2", "avx512")

_num_threads_setting: int | None = None


def _check_isa_environment() -> None:
    requested = os.environ.get("SPARSEGEMM_ISA", "").strip()
    if not requested:
        return
    name = "scalar" if requested == "portable" else requested
    if name not in ISA_NAMES:
        warnings.warn(
            f"SPARSEGEMM_ISA={requested!r} is not one of {ISA_NAMES}; using {_core.active_isa()!r}",
            RuntimeWarning,
            stacklevel=3,
        )
    elif name not in _core.supported_isas():
        warnings.warn(
            f"SPARSEGEMM_ISA={requested!r} is not supported by this CPU; "
            f"using {_core.active_isa()!r}",
            RuntimeWarning,
            stacklevel=3,
        )


#: Environment variables that pick a kernel variant, and the values each takes; any
#: other value keeps the CPU vendor's default, which would otherwise go unnoticed.
#: The C++ core's own table (core/isa.cpp), which its parsing reads too.
KERNEL_CHOICE_VARIABLES: dict[str, tuple[str, ...]] = _core.kernel_choice_variables()


def _check_kernel_choice_environment() -> None:
    for variable, choices in KERNEL_CHOICE_VARIABLES.items():
        value = os.environ.get(variable)
        if value is not None and value not in choices:
            warnings.warn(
                f"{variable}={value!r} is not one of {choices}; the CPU's default is used",
                RuntimeWarning,
                stacklevel=3,
            )


def kernel_catalogue() -> dict:
    """What this build of the C++ core contains, as the one list everything reads.

    Returns a dict with ``families`` (name -> description), ``isas`` (the levels
    every family is compiled for; :func:`available_isas` says which this CPU
    runs), ``bsr_block_shapes`` (the ``(R, C)`` block shapes with specialised
    kernels; any other shape runs a generic kernel) and ``limits``
    (``max_block_edge``, ``max_compact_cols``, ``max_dimension``,
    ``gather_max_vectors``). The planner's candidates, the kernel tests and the
    benchmarks read it, so a new kernel is one line in the C++ lists.
    """
    return _core.kernel_catalogue()


def get_isa() -> str:
    """The instruction set the kernels dispatch to now: 'scalar', 'avx2' or 'avx512'."""
    return _core.active_isa()


def available_isas() -> list[str]:
    """Instruction sets this CPU can run, lowest first. 'scalar' is always available."""
    return list(_core.supported_isas())


def set_isa(name: str | None) -> None:
    """Force the kernels to an instruction set ('scalar', 'avx2', 'avx512').

    ``None`` restores the best the CPU supports. Raises ValueError for an unknown
    name or a level this CPU cannot run. The environment variable
    ``SPARSEGEMM_ISA`` sets the initial level.
    """
    if name is None:
        name = _core.best_isa()
    if name not in ISA_NAMES and name != "portable":
        raise ValueError(f"unknown ISA {name!r}; expected one of {ISA_NAMES}")
    _core.set_active_isa(name)


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[None]:
    """Context manager that runs its block with the kernels forced to ``name``."""
    previous = get_isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _env_threads() -> int | None:
    for variable in ("SPARSEGEMM_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def get_num_threads() -> int:
    """The thread count used when a call does not pass ``num_threads``."""
    if _num_threads_setting is not None:
        return _num_threads_setting
    return _default_num_threads()


@functools.cache
def _default_num_threads() -> int:
    # Read once, at the first call (as OpenMP reads OMP_NUM_THREADS once at start-up):
    # the environment lookups and the affinity syscall would otherwise cost several
    # microseconds on every product call.
    return _env_threads() or _usable_cpus()


def set_num_threads(num_threads: int | None) -> None:
    """Set the default thread count for sparsegemm's kernels (``None`` resets it)."""
    global _num_threads_setting
    if num_threads is not None:
        num_threads = _check_num_threads(num_threads)
    _num_threads_setting = num_threads


def _check_num_threads(num_threads: object) -> int:
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
    return num_threads


def resolve_num_threads(num_threads: int | None) -> int:
    """An explicit count if given (validated), else :func:`get_num_threads`."""
    if num_threads is None:
        return get_num_threads()
    return _check_num_threads(num_threads)


def _numpy_blas() -> list[dict]:
    try:
        import threadpoolctl
    except ImportError:
        return []
    import numpy  # noqa: F401  (loads numpy's BLAS so threadpoolctl can see it)

    infos = threadpoolctl.threadpool_info()
    return [info for info in infos if info.get("user_api") == "blas"]


def _system_huge_pages() -> str | None:
    """The kernel's transparent huge page mode ('always', 'madvise' or 'never'), or None
    where it does not say. The matrices' large arrays ask for huge pages (madvise), which
    every mode but 'never' grants."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as handle:
            text = handle.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def show_config(*, print_out: bool = True) -> dict | None:
    """Report the version, SIMD level, OpenMP runtime, threads and numpy's BLAS.

    Like ``numpy.show_runtime()``: prints and returns None (so a REPL echoes
    nothing more); with ``print_out=False`` returns the facts as a dict instead.
    """
    from . import __version__

    blas = _numpy_blas()
    config = {
        "version": __version__,
        "isa": get_isa(),
        "best_isa": _core.best_isa(),
        "available_isas": available_isas(),
        "isa_override": os.environ.get("SPARSEGEMM_ISA") or None,
        "batch1_csr_kernel": "vector gathers" if _core.prefer_hardware_gather() else "scalar loads",
        "bitmap_prefetch": _core.bitmap_prefetch(),
        "bitmap_walk": _core.bitmap_walk(),
        "avx512_extensions": _core.use_avx512_extensions(),
        "avx512_bf16": _core.use_avx512_extensions() and _core.avx512_bf16_supported(),
        "amx": _core.use_amx(),
        "int8_indexed_walk": _core.use_avx512_extensions() and _core.use_int8_indexed_walk(),
        "huge_pages": _core.huge_pages_enabled(),
        "system_huge_pages": _system_huge_pages(),
        "openmp_runtime": _core.openmp_runtime(),
        "cache_sizes": _core.cache_sizes(),
        "num_threads": get_num_threads(),
        "numpy_blas": [
            {
                "library": b.get("internal_api"),
                "version": b.get("version"),
                "kernel": b.get("architecture"),
                "threads": b.get("num_threads"),
                "path": b.get("filepath"),
            }
            for b in blas
        ],
    }
    if print_out:
        print(f"sparsegemm {config['version']}")
        print(f"  ISA: {config['isa']} (best for this CPU: {config['best_isa']}; "
              f"available: {', '.join(config['available_isas'])})")
        if config["isa_override"]:
            print(f"  SPARSEGEMM_ISA: {config['isa_override']}")
        print(f"  batch-1 CSR kernel: {config['batch1_csr_kernel']} (SPARSEGEMM_GATHER)")
        print(f"  batch-1 bitmap prefetch: {config['bitmap_prefetch']} "
              "(SPARSEGEMM_BITMAP_PREFETCH=near|far|off)")
        print(f"  batch-1 bitmap walk: {config['bitmap_walk']} "
              "(SPARSEGEMM_BITMAP_WALK=expand|compress; AVX-512 float and double)")
        extensions = "on" if config["avx512_extensions"] else (
            "off" if _core.avx512_extensions_supported() else "not on this CPU")
        print(f"  AVX-512 VBMI/VBMI2/VNNI int8 and bfloat16 kernels: {extensions} "
              "(SPARSEGEMM_AVX512_EXTENSIONS)")
        if config["avx512_extensions"]:
            walk = "on" if config["int8_indexed_walk"] else "off"
            print(f"  int8 batch-1 walk by stored columns, very sparse weights: {walk} "
                  "(SPARSEGEMM_INT8_INDEXED)")
        if config["avx512_bf16"]:
            print("  AVX512-BF16 dot products for bfloat16 inputs: on")
        if _core.amx_supported():
            print(f"  AMX int8 tiles for int8 batches above 4: {'on' if config['amx'] else 'off'} "
                  "(SPARSEGEMM_AMX)")
        pages = "on" if config["huge_pages"] else "off"
        print(f"  large weight arrays on transparent huge pages: {pages} (SPARSEGEMM_HUGE_PAGES; "
              f"the system's setting: {config['system_huge_pages'] or 'unknown'})")
        caches = ", ".join(f"{name} {size // 1024} KiB" if size else f"{name} not reported"
                           for name, size in config["cache_sizes"].items())
        print(f"  per-core caches: {caches} (CSR panel and column-chunk sizes)")
        print(f"  OpenMP runtime: {config['openmp_runtime']}")
        print(f"  threads: {config['num_threads']}")
        if not config["numpy_blas"]:
            print("  numpy BLAS: unknown (install threadpoolctl to see it)")
        for b in config["numpy_blas"]:
            print(f"  numpy BLAS: {b['library']} {b['version']}, kernel {b['kernel']}, "
                  f"{b['threads']} threads")
        return None
    return config
