"""Runs a grid of points through the contenders and returns one result row per pair."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..timing import thread_limits
from . import contenders as registry
from .harness import HarnessSettings, WrongResult, check_output, measure
from .workloads import Point, WeightCache


@dataclass
class SuiteSpec:
    """Everything a run needs besides the machine."""

    points: list[Point]
    contenders: list[str]
    dtype: np.dtype
    threads: int
    harness: HarnessSettings
    quick: bool = False  # applies the contenders' quick-suite trims


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


def run_point(
    point: Point,
    weight: np.ndarray,
    x: np.ndarray,
    spec: SuiteSpec,
    weight_cache: dict | None = None,
) -> list[dict[str, Any]]:
    """Check, time and compare every contender on one point.

    ``weight_cache`` keeps converted weights for the next point with the same
    weight (the grid runs all batches of a weight in a row).
    """
    weight_cache = {} if weight_cache is None else weight_cache
    problem = registry.Problem(
        weight=weight, x=x, pattern=point.pattern, threads=spec.threads, weight_cache=weight_cache
    )
    weight64 = problem.cached("float64", lambda: weight.astype(np.float64))
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
            row["max_rel_error"] = check_output(result, reference, point.in_features)
        except registry.Unsupported as reason:
            row.update(status="skipped", detail=str(reason))
            continue
        except WrongResult as mismatch:
            row.update(status="wrong", detail=str(mismatch))
            continue
        except Exception as error:  # noqa: BLE001  (a peer library failing must not stop the suite)
            row.update(status="error", detail=f"{type(error).__name__}: {error}")
            continue
        row["detail"] = getattr(call, "choice", "")
        calls[name] = call

    references = [name for name in calls if registry.REGISTRY[name].kind == "dense"]
    measured = measure(calls, references, spec.harness, first_call_s)
    dense_times = {name: measured.timings[name].median for name in references}
    baseline = _baseline(point, dense_times)
    best_dense = min(dense_times.values(), default=math.nan)
    baseline_time = dense_times[baseline] if baseline else math.nan
    dense_flops = 2.0 * point.out_features * point.in_features * point.batch
    useful_flops = 2.0 * int(np.count_nonzero(weight)) * point.batch
    for name, timing in measured.timings.items():
        median = timing.median
        q1, q3 = timing.quartiles
        flops = dense_flops if registry.REGISTRY[name].kind == "dense" else useful_flops
        rows[name].update(
            time_median_s=median,
            time_q1_s=q1,
            time_q3_s=q3,
            time_min_s=min(timing.samples),
            time_max_s=max(timing.samples),
            samples=len(timing.samples),
            calls_per_sample=timing.calls_per_sample,
            baseline=baseline,
            baseline_time_s=baseline_time,
            speedup=baseline_time / median,
            speedup_vs_best_dense=best_dense / median,
            useful_gflops=flops / median / 1e9,
            effective_gflops=dense_flops / median / 1e9,
            baseline_gflops=dense_flops / baseline_time / 1e9 if baseline else math.nan,
            remeasured=measured.remeasured,
            steady=measured.steady,
        )
    for row in rows.values():
        row.setdefault("speedup", math.nan)
        row.setdefault("speedup_vs_best_dense", math.nan)
    return list(rows.values())


def run_suite(spec: SuiteSpec, *, progress: bool = True, seed: int = 0) -> list[dict[str, Any]]:
    """Run every point of ``spec``; rows come back in grid order."""
    unknown = [name for name in spec.contenders if name not in registry.REGISTRY]
    if unknown:
        raise ValueError(f"unknown contenders {unknown}; known: {sorted(registry.REGISTRY)}")
    uses_torch = any(registry.REGISTRY[name].needs_torch for name in spec.contenders)
    cache = WeightCache(spec.dtype, seed=seed)
    rows: list[dict[str, Any]] = []
    bar = _Progress(len(spec.points), progress)
    try:
        with thread_limits(spec.threads, include_torch=uses_torch):
            weight_cache: dict = {}
            for point in spec.points:
                weight = cache.pruned(point)
                if weight_cache.get("weight") is not weight:
                    weight_cache = {"weight": weight}
                x = cache.inputs(point.batch, point.in_features)
                rows.extend(run_point(point, weight, x, spec, weight_cache))
                bar.step(f"{point.shape_name} b={point.batch} s={point.sparsity:g} {point.pattern}")
    finally:
        bar.close()
    return rows
