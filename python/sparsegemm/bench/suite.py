"""Runs a grid of points through the contenders and returns one result row per pair."""

from __future__ import annotations

import functools
import itertools
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..timing import COLD_MAX_BATCH, blas_thread_limit, last_level_cache_bytes, thread_limits
from ..timing import cold_copies as timing_cold_copies
from . import contenders as registry
from .analysis import is_sparsegemm_figure, point_key
from .harness import (
    SLOW_PHASE_RATIO,
    HarnessSettings,
    WrongResult,
    check_approximate,
    check_output,
    measure,
)
from .workloads import Point, WeightCache, parse_pattern

#: A cold run (batches up to COLD_MAX_BATCH by default) rotates through copies of the
#: weight that together hold at least COLD_CACHE_MULTIPLE times the last-level cache,
#: but never more copies than this (a point whose copies then still fit in the cache
#: is labelled "partly cold").
MAX_COLD_COPIES = 1024
CACHE_MODES = ("auto", "cold", "warm")


@dataclass
class SuiteSpec:
    """Everything a run needs besides the machine.

    ``cache``: "cold" rotates each contender through copies of its weight that
    exceed the last-level cache (``llc_bytes``), "warm" calls one copy, "auto"
    is cold for batches up to :data:`COLD_MAX_BATCH`.
    """

    points: list[Point]
    contenders: list[str]
    dtype: np.dtype
    threads: int
    harness: HarnessSettings
    quick: bool = False  # applies the contenders' quick-suite trims
    cache: str = "auto"
    llc_bytes: int = field(default_factory=lambda: last_level_cache_bytes()[0])

    def __post_init__(self) -> None:
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, got {self.cache!r}")

    def is_cold(self, batch: int) -> bool:
        return self.cache == "cold" or (self.cache == "auto" and batch <= COLD_MAX_BATCH)


class _Progress:
    """tqdm when installed, else a single updating line on stderr."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.count, self.enabled = total, 0, enabled
        self._bar = None
        self._start = time.perf_counter()
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, file=sys.stderr, unit="point", leave=False)
            except ImportError:
                pass

    def step(self, description: str) -> None:
        self.count += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_description(description, refresh=False)
            self._bar.update(1)
        else:
            elapsed = time.perf_counter() - self._start
            sys.stderr.write(f"\r[{self.count}/{self.total}] {elapsed:5.0f}s {description:<48}")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            sys.stderr.write("\n")


def _row_base(
    point: Point, weight: np.ndarray, spec: SuiteSpec, contender: registry.Contender
) -> dict:
    return {
        "out_features": point.out_features,
        "in_features": point.in_features,
        "batch": point.batch,
        "sparsity": point.sparsity,
        "actual_sparsity": 1.0 - int(np.count_nonzero(weight)) / weight.size,
        "pattern": point.pattern.name,
        "label": point.label,
        "dtype": str(spec.dtype),
        "threads": spec.threads,
        "contender": contender.name,
        "kind": contender.kind,
        "is_sparsegemm": contender.is_sparsegemm,
        "threading": contender.threading,
        "status": "ok",
        "detail": "",
        "format": "",
        "kept_dense": False,
        "alternative": "",
        "cache": "cold" if spec.is_cold(point.batch) else "warm",
    }


def _quick_trim(contender: registry.Contender, point: Point) -> str | None:
    """Why the quick suite leaves ``contender`` out at ``point``, or None."""
    if contender.quick_max_batch is not None and point.batch > contender.quick_max_batch:
        return f"quick suite: only batch <= {contender.quick_max_batch}"
    if contender.quick_unstructured_only and point.pattern.blocksize is not None:
        return "quick suite: only unstructured weights"
    return None


def _baseline(point: Point, dense_times: dict[str, float]) -> str | None:
    """Batch 1: the faster dense (torch's GEMV reads weights far slower than OpenBLAS).

    Otherwise torch F.linear, which is what a PyTorch user would replace.
    """
    if not dense_times:
        return None
    if point.batch == 1 or "torch_dense" not in dense_times:
        return min(dense_times, key=dense_times.__getitem__)
    return "torch_dense"


def cold_copies(footprint_bytes: int, llc_bytes: int, max_copies: int = MAX_COLD_COPIES) -> int:
    """How many copies of a weight of ``footprint_bytes`` a cold run rotates through
    (:func:`sparsegemm.timing.cold_copies`, at most ``max_copies``)."""
    return timing_cold_copies(footprint_bytes, llc_bytes, max_copies)


def _footprint_bytes(kind: str, weight: np.ndarray, itemsize: int | None = None) -> int:
    """A lower bound of the weight bytes one call reads: all of a dense (or dense
    int8/bf16 alternative's) weight, the stored values of a sparse one (indices only
    add to it)."""
    itemsize = itemsize or weight.itemsize
    if kind in ("dense", "alternative"):
        return weight.size * itemsize
    return int(np.count_nonzero(weight)) * itemsize


def _rotating(calls: list[Callable[[], Any]]) -> Callable[[], Any]:
    """One call that runs the next of ``calls`` each time (cold runs)."""
    if len(calls) == 1:
        return calls[0]
    cycle = itertools.cycle(calls)
    return lambda: next(cycle)()


def _cold_call(
    build: Callable[[registry.Problem], Callable[[], Any]],
    problem: registry.Problem,
    first: Callable[[], Any],
    copies: int,
) -> Callable[[], Any]:
    """``first`` and ``copies - 1`` more calls on copies of the weight, rotated.

    The copies' conversions are kept in the problem's cache for the next batch.
    """
    calls = [first]
    for index in range(1, copies):
        copy_cache = problem.weight_cache.setdefault(f"cold copy {index}", {})
        calls.append(build(problem.cold_copy(copy_cache)))
    return _rotating(calls)


def work_ratio(actual_sparsity: float) -> float:
    """1 / (1 - s): the dense work over the sparse work."""
    return math.inf if actual_sparsity >= 1.0 else 1.0 / (1.0 - actual_sparsity)


def above_work_ratio_reason(row: dict[str, Any]) -> str:
    """Why a speedup above 1/(1-s) is suspect (empty when it is not above)."""
    ratio = work_ratio(row["actual_sparsity"])
    speedups = [row.get("speedup", math.nan), row.get("speedup_vs_best_dense", math.nan)]
    if not any(value > ratio for value in speedups):
        return ""
    head = f"above 1/(1-s) = {ratio:.1f}x"
    if row.get("cache") != "cold":
        cache = row.get("cache")
        return f"{head}: {cache} run, the sparse weight may stay in cache while dense streams"
    if not row.get("speedup_vs_best_dense", math.nan) > ratio:
        return f"{head} only against {row['baseline']}: that dense library runs slowly here"
    return f"{head} cold: dense runs below its best here (see the gain over own 0%)"


def _alignment(array: np.ndarray) -> int:
    """The array's address modulo 64 (0 = cache-line aligned)."""
    return int(array.ctypes.data % 64)


def run_point(
    point: Point,
    weight: np.ndarray,
    x: np.ndarray,
    spec: SuiteSpec,
    weight_cache: dict | None = None,
    unpruned: np.ndarray | None = None,
    unpruned_cache: dict | None = None,
) -> list[dict[str, Any]]:
    """Check, time and compare every contender on one point.

    ``weight_cache`` keeps converted weights for the next point with the same
    weight (the grid runs all batches of a weight in a row). With ``unpruned``,
    the weight before pruning, each sparsegemm format that ran is also timed on
    it (sparsegemm's own kernel at 0% sparsity, in the same rounds), its
    conversions kept in ``unpruned_cache``.
    """
    weight_cache = {} if weight_cache is None else weight_cache
    problem = registry.Problem(
        weight=weight, x=x, pattern=point.pattern, threads=spec.threads, weight_cache=weight_cache
    )
    cold = spec.is_cold(point.batch)
    weight64 = problem.cached("float64", lambda: weight.astype(np.float64))
    with blas_thread_limit(1):  # no OpenBLAS worker left spinning into the timing
        reference = x.astype(np.float64) @ weight64.T
    rows: dict[str, dict[str, Any]] = {}
    calls: dict[str, Callable[[], Any]] = {}
    first_call_s: dict[str, float] = {}
    for name in spec.contenders:
        contender = registry.REGISTRY[name]
        row = rows[name] = _row_base(point, weight, spec, contender)
        trimmed = _quick_trim(contender, point) if spec.quick else None
        if trimmed:
            row.update(status="skipped", detail=trimmed)
            continue
        try:
            call = contender.build(problem)
            started = time.perf_counter()
            result = call()
            first_call_s[name] = time.perf_counter() - started
            if contender.approximate_tolerance is None:
                row["max_rel_error"] = check_output(result, reference, point.in_features)
            else:
                row["max_rel_error"] = check_approximate(
                    result, reference, contender.approximate_tolerance
                )
            ran = registry.ran_as(call)
            row.update(format=ran.format, kept_dense=ran.kept_dense, detail=ran.note)
            copies = 1
            if cold:
                kind = "dense" if ran.kept_dense else contender.kind
                footprint = _footprint_bytes(kind, weight, contender.weight_itemsize)
                copies = cold_copies(footprint, spec.llc_bytes)
                call = _cold_call(contender.build, problem, call, copies)
                if copies * footprint < spec.llc_bytes:
                    row["cache"] = "partly cold"
            row["cold_copies"] = copies
        except registry.Unsupported as reason:
            row.update(status="skipped", detail=str(reason))
            continue
        except WrongResult as mismatch:
            row.update(status="wrong", detail=str(mismatch))
            continue
        except Exception as error:  # noqa: BLE001  (a peer library failing must not stop the suite)
            row.update(status="error", detail=f"{type(error).__name__}: {error}")
            continue
        calls[name] = call

    own_dense = _own_dense_calls(rows, calls, point, x, spec, unpruned, unpruned_cache)
    references = [name for name in calls if registry.REGISTRY[name].kind == "dense"]
    measured = measure({**calls, **own_dense}, references, spec.harness, first_call_s)
    dense_times = {name: measured.timings[name].median for name in references}
    baseline = _baseline(point, dense_times)
    best_dense_name = min(dense_times, key=dense_times.__getitem__, default=None)
    best_dense = dense_times[best_dense_name] if best_dense_name else math.nan
    baseline_time = dense_times[baseline] if baseline else math.nan
    alternatives = {
        name: measured.timings[name].median
        for name in calls
        if registry.REGISTRY[name].kind == "alternative"
    }
    fastest_alternative = min(alternatives, key=alternatives.__getitem__, default=None)
    dense_flops = 2.0 * point.out_features * point.in_features * point.batch
    useful_flops = 2.0 * int(np.count_nonzero(weight)) * point.batch
    for name in calls:
        timing = measured.timings[name]
        row = rows[name]
        median = timing.median
        q1, q3 = timing.quartiles
        flops = useful_flops if registry.REGISTRY[name].kind == "sparse" else dense_flops
        row.update(
            time_median_s=median,
            time_q1_s=q1,
            time_q3_s=q3,
            time_min_s=min(timing.samples),
            time_max_s=max(timing.samples),
            samples=len(timing.samples),
            calls_per_sample=timing.calls_per_sample,
            baseline=baseline,
            baseline_time_s=baseline_time,
            best_dense=best_dense_name,
            useful_gflops=flops / median / 1e9,
            effective_gflops=dense_flops / median / 1e9,
            baseline_gflops=dense_flops / baseline_time / 1e9 if baseline else math.nan,
            remeasured=measured.remeasured,
            steady=measured.steady,
            x_alignment=_alignment(x),
            weight_alignment=_alignment(weight),
        )
        if row["kept_dense"]:
            continue  # a dense library ran: it has no sparse speedup
        row.update(speedup=baseline_time / median, speedup_vs_best_dense=best_dense / median)
        own = OWN_DENSE_PREFIX + row["format"]
        if row["is_sparsegemm"] and own in measured.timings:
            row["own_dense_time_s"] = measured.timings[own].median
            row["speedup_vs_own_dense"] = row["own_dense_time_s"] / median
        if row["is_sparsegemm"] and fastest_alternative is not None:
            row["alternative"] = fastest_alternative
            row["speedup_vs_alternative"] = alternatives[fastest_alternative] / median
        row["flag"] = above_work_ratio_reason(row)
    for row in rows.values():
        for column in (
            "speedup",
            "speedup_vs_best_dense",
            "speedup_vs_own_dense",
            "speedup_vs_alternative",
        ):
            row.setdefault(column, math.nan)
    return list(rows.values())


#: Name prefix of the extra calls that time sparsegemm's own kernel at 0% sparsity.
OWN_DENSE_PREFIX = "own 0%: "


def _own_dense_calls(
    rows: dict[str, dict[str, Any]],
    calls: dict[str, Callable[[], Any]],
    point: Point,
    x: np.ndarray,
    spec: SuiteSpec,
    unpruned: np.ndarray | None,
    unpruned_cache: dict | None,
) -> dict[str, Callable[[], Any]]:
    """sparsegemm's kernel on the unpruned weight, for each format that ran here."""
    if unpruned is None:
        return {}
    cache = {} if unpruned_cache is None else unpruned_cache
    problem = registry.Problem(unpruned, x, point.pattern, spec.threads, cache)
    formats = {
        rows[name]["format"]
        for name in calls
        if rows[name]["is_sparsegemm"] and not rows[name]["kept_dense"] and rows[name]["format"]
    }
    own = {}
    for format in sorted(formats):
        build = functools.partial(registry.sparsegemm_call, format=format)
        call = build(problem)
        if spec.is_cold(point.batch):
            copies = cold_copies(unpruned.nbytes, spec.llc_bytes)
            call = _cold_call(build, problem, call, copies)
        own[OWN_DENSE_PREFIX + format] = call
    return own


#: A sparse speedup that falls by more than this from one grid sparsity to the
#: next higher one is out of line (run-to-run noise here is about 15%).
NON_MONOTONE_DROP = 1.15


def suspect_points(rows: Sequence[dict[str, Any]]) -> dict[Point, str]:
    """Points whose sparsegemm figures cannot be trusted as measured, with the reason.

    Unsteady: the dense reference's samples disagreed (``steady`` False), or the
    processes of a ``--processes`` run disagree. Out of line: a sparsegemm
    contender's speedup falls by more than :data:`NON_MONOTONE_DROP` as sparsity
    rises (both points are suspect).
    """
    suspects: dict[Point, str] = {}
    series: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["status"] != "ok":
            continue
        if row.get("suspect"):  # e.g. merged from a process that still found it suspect
            suspects.setdefault(_point_of(row), row["suspect"])
        if not row.get("steady", True):
            suspects.setdefault(_point_of(row), "unsteady dense reference")
        if row.get("process_spread", 1.0) > SLOW_PHASE_RATIO:
            suspects.setdefault(
                _point_of(row), f"processes disagree ({row['process_spread']:.2f}x apart)"
            )
        if is_sparsegemm_figure(row):
            series[tuple(point_key(row)) + (row["contender"],)].append(row)
    for points in series.values():
        points.sort(key=lambda r: r["sparsity"])
        for lower, higher in zip(points, points[1:]):
            if higher["speedup"] * NON_MONOTONE_DROP < lower["speedup"]:
                reason = (
                    f"{higher['contender']} speedup falls from {lower['speedup']:.2f}x at "
                    f"{lower['sparsity']:g} to {higher['speedup']:.2f}x at {higher['sparsity']:g}"
                )
                suspects.setdefault(_point_of(lower), reason)
                suspects.setdefault(_point_of(higher), reason)
    return suspects


def _point_of(row: dict[str, Any]) -> Point:
    return Point(
        row["out_features"],
        row["in_features"],
        row["batch"],
        row["sparsity"],
        parse_pattern(row["pattern"]),
        row["label"],
    )


def mark_suspects(rows: list[dict[str, Any]]) -> dict[Point, str]:
    """Set ``suspect`` on every row of a suspect point (cleared elsewhere); returns them."""
    suspects = suspect_points(rows)
    for row in rows:
        row["suspect"] = suspects.get(_point_of(row), "")
    return suspects


def run_suite(
    spec: SuiteSpec, *, progress: bool = True, seed: int = 0, remeasure: bool = True
) -> list[dict[str, Any]]:
    """Run every point of ``spec``; rows come back in grid order.

    With ``remeasure``, suspect points (see :func:`suspect_points`) are measured
    once more and their rows replaced; points still suspect keep a ``suspect``
    reason, which leaves them out of break-evens.
    """
    unknown = [name for name in spec.contenders if name not in registry.REGISTRY]
    if unknown:
        raise ValueError(f"unknown contenders {unknown}; known: {sorted(registry.REGISTRY)}")
    uses_torch = any(registry.REGISTRY[name].needs_torch for name in spec.contenders)
    cache = WeightCache(spec.dtype, seed=seed)
    by_point: dict[Point, list[dict[str, Any]]] = {}
    bar = _Progress(len(spec.points), progress)
    try:
        with thread_limits(spec.threads, include_torch=uses_torch):
            runner = _PointRunner(spec, cache)
            for point in spec.points:
                by_point[point] = runner.run(point)
                bar.step(f"{point.shape_name} b={point.batch} s={point.sparsity:g} {point.pattern}")
            suspects = mark_suspects([r for rows in by_point.values() for r in rows])
            if remeasure and suspects:
                for point in suspects:
                    if point in by_point:
                        by_point[point] = runner.run(point)
                        for row in by_point[point]:
                            row["remeasured"] = row.get("remeasured", 0) + 1
                mark_suspects([r for rows in by_point.values() for r in rows])
    finally:
        bar.close()
    return [row for rows in by_point.values() for row in rows]


class _PointRunner:
    """Runs points in grid order, keeping conversions while the weight stays the same."""

    def __init__(self, spec: SuiteSpec, cache: WeightCache):
        self.spec, self.cache = spec, cache
        self.weight_cache: dict = {}
        self.unpruned_cache: dict = {}

    def run(self, point: Point) -> list[dict[str, Any]]:
        weight = self.cache.pruned(point)
        unpruned = self.cache.dense(point.out_features, point.in_features)
        if self.weight_cache.get("weight") is not weight:
            self.weight_cache = {"weight": weight}
        if self.unpruned_cache.get("weight") is not unpruned:
            self.unpruned_cache = {"weight": unpruned}
        x = self.cache.inputs(point.batch, point.in_features)
        return run_point(
            point, weight, x, self.spec, self.weight_cache, unpruned, self.unpruned_cache
        )
