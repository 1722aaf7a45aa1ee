"""Turning result rows into answers: break-even sparsity and speedups at a given sparsity.

Rows are the dicts of :data:`sparsegemm.bench.results.COLUMNS`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

BEST_SPARSEGEMM = "best sparsegemm"


def break_even(sparsities: Sequence[float], speedups: Sequence[float]) -> float | str:
    """The sparsity above which the sparse contender stays faster than dense.

    Linear interpolation of speedup = 1 between the highest grid sparsity where it
    is slower (speedup < 1) and the next one up. Returns ``"always"`` when it is
    faster at every grid point, ``"never"`` when it is slower at the highest one,
    and ``"n/a"`` without data. NaN speedups (not measured) are ignored.
    """
    points = sorted((s, v) for s, v in zip(sparsities, speedups) if not math.isnan(v))
    if not points:
        return "n/a"
    slower = [i for i, (_, speedup) in enumerate(points) if speedup < 1.0]
    if not slower:
        return "always"
    last = slower[-1]
    if last == len(points) - 1:
        return "never"
    (s0, v0), (s1, v1) = points[last], points[last + 1]
    return s0 + (1.0 - v0) * (s1 - s0) / (v1 - v0)


def format_break_even(value: float | str) -> str:
    return f"{value:.3f}" if isinstance(value, float) else value


def baselines_label(rows: Iterable[dict[str, Any]]) -> str:
    """The dense contender(s) these rows' speedups are against, e.g. ``numpy_dense/torch_dense``.

    At batch 1 each point uses whichever dense was faster there, so a series can
    mix both.
    """
    return "/".join(sorted({row["baseline"] for row in rows if row.get("baseline")})) or "-"


def _key(row: dict[str, Any]) -> tuple:
    return (row["out_features"], row["in_features"], row["pattern"], row["batch"])


def best_sparsegemm_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One synthetic row per point: the fastest sparsegemm contender there."""
    best: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        if row["status"] != "ok" or row["kind"] != "sparse" or not row["is_sparsegemm"]:
            continue
        key = (*_key(row), row["sparsity"])
        if key not in best or row["speedup"] > best[key]["speedup"]:
            best[key] = row
    return [dict(row, contender=BEST_SPARSEGEMM, detail=row["contender"]) for row in best.values()]


def break_even_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Break-even sparsity and speedup at 90% per shape, pattern, batch and sparse contender.

    Includes a ``best sparsegemm`` entry per shape/pattern/batch (the fastest
    sparsegemm format at each sparsity).
    """
    series: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in [*rows, *best_sparsegemm_rows(rows)]:
        if row["status"] == "ok" and row["kind"] == "sparse":
            series[(*_key(row), row["contender"])].append(row)
    table = []
    for (m, k, pattern, batch, contender), points in series.items():
        points.sort(key=lambda r: r["sparsity"])
        at_90 = [r for r in points if abs(r["sparsity"] - 0.9) < 1e-9]
        table.append(
            {
                "out_features": m,
                "in_features": k,
                "pattern": pattern,
                "batch": batch,
                "contender": contender,
                "break_even_sparsity": break_even(
                    [r["sparsity"] for r in points], [r["speedup"] for r in points]
                ),
                "speedup_at_90": at_90[0]["speedup"] if at_90 else None,
                "format_at_90": at_90[0].get("detail") or contender if at_90 else None,
                "baseline": baselines_label(points),
            }
        )
    return table
