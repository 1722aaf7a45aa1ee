"""Choosing a format by measuring: dense, CSR, a bitmap or a BSR block shape.

:func:`plan` times ``x @ W.T`` for a weight ``W`` at a given batch on this
machine (dense BLAS, CSR, the bitmap and every BSR block shape that could pay off),
interleaving the contenders over several rounds and taking medians, and keeps
a sparse format only when it beats the fastest dense contender by a margin (as
LIBXSMM does): it never returns a sparse format that measured slower than
dense. Decisions are cached in-process and, with ``cache_dir`` (or the
``SPARSEGEMM_PLAN_CACHE`` environment variable), in a JSON file, keyed by the
CPU model, ISA, shape, batch, threads, dtype, the nonzero pattern itself (a
hash, besides nnz and each block shape's fill ratio), the versions of
sparsegemm, numpy and (when imported) torch, and the batch-1 gather choice
(``SPARSEGEMM_GATHER``). A decision read from a cache has ``cached`` set: its
times were measured on another call (possibly another process), not now.

At batch <= COLD_MAX_BATCH the product streams the weight from memory in a
real network (many layers evict each other's weights), so each contender is
timed cold: every call takes the next of enough copies of its operand (dense
array or sparse matrix, each built separately) that together they exceed
twice the last-level cache. Timing one weight in a loop would keep a small
sparse weight cache-resident while its dense twin streams, and flatter it.

The torch layer is never imported here (torch is an optional extra): torch's
``F.linear`` joins the dense contenders only when the caller has already
imported torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from . import _core
from ._dtypes import BFLOAT16, bfloat16_rounded, is_bfloat16, kernel_dtype
from ._runtime import get_isa, kernel_catalogue, resolve_num_threads
from .formats import BitmapMatrix, BSRMatrix, CSRMatrix
from .ops import linear
from .pruning import all_zero_blocks
from .timing import (
    COLD_MAX_BATCH,
    SLOW_PHASE_RATIO,
    TimingSettings,
    blas_thread_limit,
    last_level_cache_bytes,
    measure,
    openblas_spin_seconds,
    thread_limits,
)
from .timing import cold_copies as timing_cold_copies

BITMAP = "bitmap"
# Blocks of fewer entries than this are never planned: a 1x1 or 2x1 block
# stores one index per one or two values, no better than CSR's one per value,
# and runs a narrower register tile.
MIN_PLANNED_BLOCK_ENTRIES = 4


def _planned_candidates() -> dict[str, tuple[int, int] | None]:
    """Candidate name -> blocksize (None: CSR or the bitmap), BSR shapes from the kernel
    catalogue."""
    candidates: dict[str, tuple[int, int] | None] = {"csr": None, BITMAP: None}
    for r, c in kernel_catalogue()["bsr_block_shapes"]:
        if r * c >= MIN_PLANNED_BLOCK_ENTRIES:
            candidates[f"bsr{r}x{c}"] = (r, c)
    return candidates


CANDIDATES = _planned_candidates()
DENSE_NUMPY = "dense_numpy"
DENSE_TORCH = "dense_torch"
# The dense products plan() beats by default: numpy's x @ W.T and torch's F.linear.
DENSE_REFERENCES = ("numpy", "torch")
# A sparse format must be this many times faster than dense to be chosen.
DEFAULT_MARGIN = 1.1
# Skipped before timing: CSR above this density, since it cannot then beat a
# dense GEMM; and below DENSE_BSR_MIN_BATCH rows, BSR storing more than
# BSR_MAX_STORED_FRACTION of the dense matrix (e.g. 16x1 blocks on unstructured
# weights): a memory-bound product gains nothing from streaming as many bytes
# as dense. From DENSE_BSR_MIN_BATCH rows up every BSR shape is timed, since
# the BSR kernel can beat dense BLAS at batch 16-64 even on a dense weight
# (zero-padded blocks) and below 50% sparsity (see BENCHMARKING.md).
CSR_MAX_DENSITY = 0.5
BSR_MAX_STORED_FRACTION = 0.75
DENSE_BSR_MIN_BATCH = 16
# The bitmap above this density: it moves 4d + 1/8 bytes per float32 weight,
# within the margin of dense's 4.
BITMAP_MAX_DENSITY = 0.9
# Rounds whose dense medians differ by more than this are a slow VM phase:
# measure again (at most MAX_EXTRA_ROUNDS times).
ROUND_DISAGREEMENT = SLOW_PHASE_RATIO
MAX_EXTRA_ROUNDS = 2
# A timed block lasts about this long (at least `repeats` calls, at most
# PLAN_MAX_CALLS). Blocks of 5 sub-millisecond calls after the sleep were
# bimodal between processes: at 768x3072 batch 1 every format read 600-900 us
# in some processes and 60-160 us in others, so the choice flipped between
# csr, bsr4x1 and dense; 4 ms blocks gave csr at 85-93 us in every process.
PLAN_BLOCK_S = 0.004
PLAN_MAX_CALLS = 1000
# A sparse contender whose first block took more than this many times the
# fastest contender's is not timed in the later rounds (its one sample is
# reported). Such a contender is not chosen unless the noise between rounds
# exceeds 2x, and timing it fully took half of sparsify's first forward: the
# MLP of the e2e bench at 70%, batch 64, spent 5.1 of 8.0 s timing, most of it
# in BSR shapes and the bitmap at 1.6-3.4x CSR's time.
PLAN_DROP_RATIO = 2.0
# At most this many copies of one operand for cold timing.
MAX_COLD_COPIES = 64

Operand = Union[CSRMatrix, BSRMatrix, BitmapMatrix, None]

_PLAN_CACHE: dict[str, dict[str, Any]] = {}


@dataclass
class Plan:
    """The outcome of :func:`plan`.

    Attributes
    ----------
    format
        "dense", "csr", "bitmap" or "bsr<R>x<C>" (e.g. "bsr4x1").
    operand
        The built weight for a sparse ``format``, in the plan's dtype: pass it
        to :func:`sparsegemm.linear`. None when the plan keeps the layer dense;
        :meth:`linear` runs either kind.
    times
        Median seconds per call of every contender timed, dense ones included
        ("dense_numpy", and "dense_torch" when torch was imported).
    dense_time
        The fastest dense contender's median.
    speedup
        dense_time over the chosen format's time (1.0 for dense).
    skipped
        Candidates not timed, with the reason.
    key
        The cache key of this decision.
    cached
        True when the decision came from a cache instead of timings.
    """

    format: str
    operand: Operand
    times: dict[str, float]
    dense_time: float
    speedup: float
    skipped: dict[str, str] = field(default_factory=dict)
    key: str = ""
    cached: bool = False
    dense_weight: np.ndarray | None = field(default=None, repr=False)

    def linear(self, x: Any, bias: Any = None, *, num_threads: int | None = None) -> np.ndarray:
        """``x @ W.T + bias`` in the chosen format (numpy's product for a dense plan)."""
        if self.operand is not None:
            return linear(x, self.operand, bias, num_threads=num_threads)
        if self.dense_weight is None:
            raise ValueError("this dense Plan holds no weight; multiply by W with numpy")
        result = np.asarray(x) @ self.dense_weight.T
        return result if bias is None else result + np.asarray(bias)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _pattern_digest(W: np.ndarray) -> str:
    """A hash of where ``W``'s nonzeros (NaN included) are."""
    return hashlib.sha1(np.packbits(W != 0).tobytes()).hexdigest()


def _software_versions() -> dict[str, Any]:
    """What a timing also depends on: library versions, the batch-1 gather choice and
    whether the AVX-512 VBMI2/VNNI kernels run.

    torch's version counts only when torch is imported (it then joins the dense
    contenders).
    """
    from . import __version__

    torch = sys.modules.get("torch")
    return {
        "sparsegemm": __version__,
        "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None) if torch is not None else None,
        "gather": "hardware" if _core.prefer_hardware_gather() else "scalar",
        "bitmap_prefetch": _core.bitmap_prefetch(),
        "bitmap_walk": _core.bitmap_walk(),
        "avx512_extensions": _core.use_avx512_extensions(),
        "amx": _core.use_amx(),
    }


def _blocks_stored(W: np.ndarray, blocksize: tuple[int, int]) -> int:
    """Blocks of ``blocksize`` holding a nonzero (NaN included), as BSRMatrix.from_dense keeps."""
    return int((~all_zero_blocks(W, blocksize)).sum())


def pattern_statistics(W: np.ndarray, candidates: list[str]) -> dict[str, Any]:
    """nnz, and for each BSR candidate its stored blocks and fill ratio (nnz / stored values)."""
    nnz = int(np.count_nonzero(W))
    stats: dict[str, Any] = {"nnz": nnz, "blocks": {}, "fill": {}}
    for name in candidates:
        blocksize = CANDIDATES[name]
        if blocksize is None:
            continue
        blocks = _blocks_stored(W, blocksize)
        stats["blocks"][name] = blocks
        stored = blocks * blocksize[0] * blocksize[1]
        stats["fill"][name] = round(nnz / stored, 3) if stored else 1.0
    return stats


def _skip_reason(name: str, shape: tuple[int, int], stats: dict[str, Any],
                 batch: int) -> str | None:
    size = shape[0] * shape[1]
    if size == 0:
        return None
    blocksize = CANDIDATES[name]
    if name == BITMAP:
        density = stats["nnz"] / size
        if density > BITMAP_MAX_DENSITY:
            return f"density {density:.2f} > {BITMAP_MAX_DENSITY}: the bitmap cannot beat dense"
        return None
    if blocksize is None:
        density = stats["nnz"] / size
        if density > CSR_MAX_DENSITY:
            return f"density {density:.2f} > {CSR_MAX_DENSITY}: CSR cannot beat dense"
        return None
    stored = stats["blocks"][name] * blocksize[0] * blocksize[1] / size
    if stored > BSR_MAX_STORED_FRACTION and batch < DENSE_BSR_MIN_BATCH:
        return (f"would store {stored:.2f} of the dense matrix (> {BSR_MAX_STORED_FRACTION}) "
                f"at {batch} rows (< {DENSE_BSR_MIN_BATCH})")
    return None


def _time_candidates(
    runners: dict[str, Callable[[], Any]], repeats: int, rounds: int,
    drop_slower_than: float = math.inf,
) -> dict[str, float]:
    """Median seconds per call of each runner, timed by :func:`sparsegemm.timing.measure`.

    Contenders are interleaved: each round runs every contender as a block of
    at least ``repeats`` calls lasting about PLAN_BLOCK_S, after one warm-up
    call, with a short sleep between blocks
    so one runtime's spinning thread pool does not tax the next. With
    ``drop_slower_than`` (plan() passes PLAN_DROP_RATIO; the floors scripts,
    which report every contender, leave it infinite), a sparse contender that
    many times slower than the fastest in the first round keeps that one
    sample. Rounds are
    repeated while the dense reference's blocks disagree by more than
    ROUND_DISAGREEMENT. Tests replace this function to inject timings.
    """
    dense = [name for name in (DENSE_NUMPY, DENSE_TORCH) if name in runners][:1]
    settings = TimingSettings(
        settle_after=(DENSE_NUMPY,),
        settle_s=openblas_spin_seconds(),
        rounds=rounds,
        target_block_s=PLAN_BLOCK_S,
        min_calls=repeats,
        max_calls=max(repeats, PLAN_MAX_CALLS),
        sleep_s=0.005,
        max_remeasure=MAX_EXTRA_ROUNDS,
        skip_warmup_above_s=math.inf,
        drop_slower_than=drop_slower_than,
    )
    timings = measure(runners, dense, settings).timings
    return {name: timing.median for name, timing in timings.items()}


def cold_copies(nbytes: int, llc_bytes: int | None = None) -> int:
    """Copies of an ``nbytes`` operand that together take at least twice the last-level
    cache (:func:`sparsegemm.timing.cold_copies`), at most :data:`MAX_COLD_COPIES`."""
    llc = last_level_cache_bytes()[0] if llc_bytes is None else llc_bytes
    return timing_cold_copies(nbytes, llc, MAX_COLD_COPIES)


def _build(name: str, W: np.ndarray, value_dtype: Any = None) -> Operand:
    """Candidate ``name`` over ``W``, storing ``value_dtype`` values (default W's dtype)."""
    blocksize = CANDIDATES.get(name)
    if name == "dense":
        return None
    if name == BITMAP:
        return BitmapMatrix.from_dense(W, dtype=value_dtype)
    if blocksize is None:
        return CSRMatrix.from_dense(W, dtype=value_dtype)
    return BSRMatrix.from_dense(W, blocksize, dtype=value_dtype)


def _cache_file(cache_dir: str | os.PathLike | None) -> Path | None:
    directory = cache_dir if cache_dir is not None else os.environ.get("SPARSEGEMM_PLAN_CACHE")
    return Path(directory) / "plans.json" if directory else None


def _read_disk_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a damaged cache only costs a re-measurement


def _write_disk_cache(path: Path, key: str, decision: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = _read_disk_cache(path)
    entries[key] = decision
    # Write then rename, so a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".plans", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(entries, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def clear_cache() -> None:
    """Forget the decisions cached in this process (files on disk are kept)."""
    _PLAN_CACHE.clear()


def plan(
    W: Any,
    batch: int,
    *,
    candidates: list[str] | None = None,
    num_threads: int | None = None,
    dtype: Any = None,
    repeats: int = 5,
    rounds: int = 3,
    margin: float = DEFAULT_MARGIN,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    dense: tuple[str, ...] = DENSE_REFERENCES,
) -> Plan:
    """Measure dense, CSR, the bitmap and BSR for ``x @ W.T`` at this batch and pick the fastest.

    Parameters
    ----------
    W
        Dense weight (out_features x in_features) with zeros where pruned.
    batch
        Rows of x the product will see (1 for a GEMV). Up to COLD_MAX_BATCH
        the contenders are timed with their weights out of cache.
    candidates
        Sparse formats to consider, from :data:`CANDIDATES`; default all.
    num_threads
        Threads for every contender; default :func:`sparsegemm.get_num_threads`.
    dtype
        The dtype the product runs in, float32 or float64; default ``W``'s
        own, by the rule of every product (float16 in float32, integers in
        float64). The operand is built in this dtype. ``"bfloat16"``: ``W``
        is rounded to bfloat16, the sparse operands store bfloat16 values
        (their products compute in float32, x rounded to bfloat16 values) and
        torch's dense product runs in bfloat16, what a bfloat16 model runs
        (numpy's, if asked for, in float32).
    repeats, rounds
        The fewest calls in a timed block (a block lasts about PLAN_BLOCK_S),
        and the interleaved rounds of blocks.
    margin
        A sparse format is chosen only if ``margin * its time < dense time``.
    cache
        Reuse and record decisions (in-process, and on disk with cache_dir).
    cache_dir
        Directory for ``plans.json``; default ``$SPARSEGEMM_PLAN_CACHE`` or no disk cache.
    dense
        The dense products to beat: ``"numpy"`` (``x @ W.T``, its BLAS) and/or
        ``"torch"`` (``F.linear``, timed when torch is imported). sparsify
        passes ``("torch",)``: what the module would run instead. numpy's
        OpenBLAS threads spin for about 0.13 s after each call and would tax
        the next contender, so each of its blocks is followed by a pause
        (``timing.openblas_spin_seconds``).

    Returns
    -------
    Plan
        The chosen format, its built operand and every measured time.
    """
    threads = resolve_num_threads(num_threads)
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if repeats < 1 or rounds < 1:
        raise ValueError("repeats and rounds must be positive")
    dense = tuple(dense)
    if not dense or any(d not in DENSE_REFERENCES for d in dense):
        raise ValueError(f"dense must name 'numpy' and/or 'torch', got {dense!r}")
    if dense == ("torch",) and "torch" not in sys.modules:
        raise ValueError("dense=('torch',) needs torch imported")
    if not margin >= 1.0:
        raise ValueError(
            f"margin must be >= 1 (sparse must not be chosen when slower), got {margin}"
        )
    weight = np.asarray(W)
    bfloat16 = is_bfloat16(dtype)
    target = np.dtype(np.float32) if bfloat16 else kernel_dtype(
        weight.dtype if dtype is None else dtype)
    weight = np.ascontiguousarray(weight, dtype=target)
    if weight.ndim != 2:
        raise ValueError(f"W must be 2-dimensional, got shape {weight.shape}")
    if bfloat16:  # every contender multiplies the same rounded weight
        weight = bfloat16_rounded(weight)
    value_dtype = BFLOAT16 if bfloat16 else target
    names = list(CANDIDATES) if candidates is None else list(candidates)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown candidates {unknown}; expected some of {list(CANDIDATES)}")

    stats = pattern_statistics(weight, names)
    key_fields = {
        "cpu": _cpu_model(),
        "isa": get_isa(),
        "shape": list(weight.shape),
        "batch": int(batch),
        "threads": threads,
        "dtype": str(value_dtype),
        "nnz": stats["nnz"],
        "fill": stats["fill"],
        # Two layers with the same shape, nnz and fill are still two patterns.
        "pattern": _pattern_digest(weight),
        "candidates": names,
        "margin": margin,
        "dense": sorted(dense),
        **_software_versions(),
        "timing": "cold" if batch <= COLD_MAX_BATCH else "warm",
    }
    key = hashlib.sha1(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()
    disk_path = _cache_file(cache_dir) if cache else None
    if cache:
        decision = _PLAN_CACHE.get(key) or _read_disk_cache(disk_path).get(key)
        if decision is not None:
            _PLAN_CACHE[key] = decision
            return _plan_from_decision(decision, weight, key, cached=True,
                                       value_dtype=value_dtype)

    skipped = {}
    timed = []
    for name in names:
        reason = _skip_reason(name, weight.shape, stats, int(batch))
        if reason is None:
            timed.append(name)
        else:
            skipped[name] = reason
    operands = {name: _build(name, weight, value_dtype) for name in timed}
    runners = _runners(weight, batch, threads, operands, dense, value_dtype)
    with thread_limits(threads):
        times = _time_candidates(runners, repeats, rounds, PLAN_DROP_RATIO)
    decision = choose(times, margin)
    decision["skipped"] = skipped
    if cache:
        _PLAN_CACHE[key] = decision
        if disk_path is not None:
            _write_disk_cache(disk_path, key, decision)
    built = operands.get(decision["format"])
    return _plan_from_decision(decision, weight, key, cached=False, operand=built,
                               value_dtype=value_dtype)


def choose(times: dict[str, float], margin: float = DEFAULT_MARGIN) -> dict[str, Any]:
    """The decision for measured ``times``: the fastest sparse contender if it
    beats the fastest dense one by ``margin``, else dense."""
    dense_times = [t for name, t in times.items() if name in (DENSE_NUMPY, DENSE_TORCH)]
    if not dense_times:
        raise ValueError("times must include a dense contender")
    dense_time = min(dense_times)
    sparse = {name: t for name, t in times.items() if name in CANDIDATES}
    chosen, chosen_time = "dense", dense_time
    if sparse:
        best = min(sparse, key=lambda n: (sparse[n], n))
        if sparse[best] * margin < dense_time:
            chosen, chosen_time = best, sparse[best]
    return {
        "format": chosen,
        "times": dict(times),
        "dense_time": dense_time,
        "speedup": dense_time / chosen_time if chosen_time > 0 else 1.0,
    }


def _plan_from_decision(
    decision: dict[str, Any], W: np.ndarray, key: str, *, cached: bool, operand: Operand = None,
    value_dtype: Any = None,
) -> Plan:
    fmt = decision["format"]
    if operand is None and fmt != "dense":
        operand = _build(fmt, W, value_dtype)
    return Plan(
        format=fmt,
        operand=operand,
        times=dict(decision["times"]),
        dense_time=decision["dense_time"],
        speedup=decision["speedup"],
        skipped=dict(decision.get("skipped", {})),
        key=key,
        cached=cached,
        dense_weight=W if fmt == "dense" else None,
    )


def _runners(
    W: np.ndarray, batch: int, threads: int, operands: dict[str, Operand],
    dense: tuple[str, ...] = DENSE_REFERENCES, value_dtype: Any = None,
) -> dict[str, Callable[[], Any]]:
    """One callable per contender, each checked against the dense result first. With
    bfloat16 values (W holds the rounded weight) torch's dense product runs in bfloat16."""
    bfloat16 = value_dtype == BFLOAT16
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, W.shape[1])).astype(W.dtype)
    if bfloat16:
        x = bfloat16_rounded(x)
    # On one BLAS thread: OpenBLAS workers woken for these products spin for about
    # openblas_spin_seconds() after them, and a core taken that way made the first
    # contenders timed crawl (CSR at 7 ms a call instead of 20 us, 768x3072 at 90%
    # batch 64, in 2 of 8 processes), so the planner dropped its fastest contender.
    with blas_thread_limit(1):
        expected = x.astype(np.float64) @ W.T.astype(np.float64)
        scale = np.abs(x).astype(np.float64) @ np.abs(W.T).astype(np.float64)
    tolerances = {name: (1e-4 if W.dtype == np.float32 else 1e-10) * (scale + 1.0)
                  for name in (DENSE_NUMPY, *operands)}

    cold = batch <= COLD_MAX_BATCH
    dense_copies = [W] + [W.copy() for _ in range(cold_copies(W.nbytes) - 1 if cold else 0)]
    runners: dict[str, Callable[[], Any]] = {}
    copy_counts: dict[str, int] = {}
    if "numpy" in dense:
        runners[DENSE_NUMPY] = _rotating(dense_copies, lambda w: x @ w.T)
        copy_counts[DENSE_NUMPY] = len(dense_copies)
    torch = sys.modules.get("torch")
    if torch is not None and "torch" in dense:
        xt = torch.from_numpy(x)
        weights = [torch.from_numpy(w) for w in dense_copies]
        tolerances[DENSE_TORCH] = tolerances[DENSE_NUMPY]
        if bfloat16:  # its output is rounded to bfloat16 (8 significant bits)
            xt, weights = xt.to(torch.bfloat16), [w.to(torch.bfloat16) for w in weights]
            tolerances[DENSE_TORCH] = 2.0**-7 * (scale + 1.0)
        runners[DENSE_TORCH] = _rotating(weights, lambda w: torch.nn.functional.linear(xt, w))
        copy_counts[DENSE_TORCH] = len(weights)
    for name, operand in operands.items():
        assert operand is not None  # only sparse candidates are built
        extra = cold_copies(operand._storage_nbytes()) - 1 if cold else 0
        # Separately built copies: a shared pattern would stay cache-resident.
        copies = [operand] + [_build(name, W, value_dtype) for _ in range(extra)]
        runners[name] = _rotating(copies, lambda op: linear(x, op, num_threads=threads))
        copy_counts[name] = len(copies)
    # Every copy is checked, which also makes its first call (and any setup a
    # format does on it, such as CSR's column chunk order) before the timing.
    for name, run in runners.items():
        for _ in range(copy_counts[name]):
            result = run()
            result = np.asarray(result.float() if bfloat16 and name == DENSE_TORCH else result)
            agree = (np.abs(result - expected) <= tolerances[name]) | (result == expected)
            agree |= np.isnan(result) & np.isnan(expected)
            if not np.all(agree):
                raise RuntimeError(f"planner: contender {name!r} disagrees with the dense product")
    return runners


def _rotating(operands: list[Any], call: Callable[[Any], Any]) -> Callable[[], Any]:
    """A runner calling ``call`` on the next operand of ``operands`` each time."""
    if len(operands) == 1:
        only = operands[0]
        return lambda: call(only)
    state = {"next": 0}

    def run() -> Any:
        i = state["next"]
        state["next"] = (i + 1) % len(operands)
        return call(operands[i])

    return run
