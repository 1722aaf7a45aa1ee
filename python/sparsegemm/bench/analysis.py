"""Turning result rows into answers: break-even sparsity and speedups at a given sparsity.

Rows are the dicts of :data:`sparsegemm.bench.results.COLUMNS`.

A *sparsegemm figure* is a timing of one of sparsegemm's sparse kernels. A row
of ``sgemm_auto`` whose weight the planner kept dense ran numpy or torch, so it
is never one (:func:`is_sparsegemm_figure`). Per point, the headline is one
contender fixed before anything is timed (:func:`headline_contender`): the
planner's choice when it ran, never the fastest of several timings.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

#: The contender quoted as "sparsegemm" per point: the first of these in the run.
HEADLINE_PREFERENCE = ("sgemm_auto", "sgemm_bsr", "sgemm_csr")


def is_sparsegemm_figure(row: dict[str, Any]) -> bool:
    """True when ``row`` times one of sparsegemm's own sparse kernels."""
    return (
        row["status"] == "ok"
        and row["kind"] == "sparse"
        and bool(row["is_sparsegemm"])
        and not row.get("kept_dense", False)
    )


def is_usable(row: dict[str, Any]) -> bool:
    """False for a point flagged unsteady or out of line even after re-measuring."""
    return not row.get("suspect")


def headline_contender(rows: Iterable[dict[str, Any]]) -> str | None:
    """The sparsegemm contender quoted for these rows: the first of
    :data:`HEADLINE_PREFERENCE` that ran, whatever its timings."""
    present = {row["contender"] for row in rows}
    return next((name for name in HEADLINE_PREFERENCE if name in present), None)


def break_even(
    sparsities: Sequence[float],
    speedups: Sequence[float],
    kept_dense: Iterable[float] = (),
) -> float | str:
    """The sparsity above which the sparse contender stays faster than dense.

    Linear interpolation of speedup = 1 between the highest grid sparsity where it
    is slower (speedup < 1) and the next one up. Returns ``"always"`` when it is
    faster at every grid point, ``"never"`` when it is slower at the highest one,
    and ``"n/a"`` without data. NaN speedups (not measured) are ignored.

    ``kept_dense`` sparsities are points where the planner kept the weight dense:
    sparse did not win there, but has no speedup to interpolate, so when the last
    such loss is one of them the next measured sparsity is returned.
    """
    points = sorted((s, v) for s, v in zip(sparsities, speedups) if not math.isnan(v))
    points += [(s, math.nan) for s in kept_dense]
    points.sort(key=lambda point: point[0])
    if not points:
        return "n/a"
    slower = [i for i, (_, speedup) in enumerate(points) if not speedup >= 1.0]
    if not slower:
        return "always"
    last = slower[-1]
    if last == len(points) - 1:
        return "never"
    (s0, v0), (s1, v1) = points[last], points[last + 1]
    if math.isnan(v0):
        return s1
    return s0 + (1.0 - v0) * (s1 - s0) / (v1 - v0)


def format_break_even(value: float | str) -> str:
    return f"{value:.3f}" if isinstance(value, float) else value


def baselines_label(rows: Iterable[dict[str, Any]]) -> str:
    """The dense contender(s) these rows' speedups are against, e.g. ``numpy_dense/torch_dense``.

    At batch 1 each point uses whichever dense was faster there, so a series can
    mix both.
    """
    return "/".join(sorted({row["baseline"] for row in rows if row.get("baseline")})) or "-"


def point_key(row: dict[str, Any]) -> tuple:
    """(M, K, pattern, batch): one curve of the plot, one line of the report."""
    return (row["out_features"], row["in_features"], row["pattern"], row["batch"])


def headline_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per shape, pattern and batch, the headline contender's sparsegemm figures."""
    series: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        series[point_key(row)].append(row)
    chosen = []
    for group in series.values():
        name = headline_contender(group)
        chosen += [r for r in group if r["contender"] == name and is_sparsegemm_figure(r)]
    return chosen


def _at_90(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in points if abs(r["sparsity"] - 0.9) < 1e-9), None)


def break_even_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Break-even sparsity and speedups at 90% per shape, pattern, batch and sparse contender.

    ``headline`` marks the contender quoted for sparsegemm (:func:`headline_contender`).
    Points where the planner kept the weight dense count as losses without a
    figure; points flagged suspect are left out and listed in ``excluded``.
    """
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[point_key(row)].append(row)
    table = []
    for key, group in groups.items():
        headline = headline_contender(group)
        series: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in group:
            if row["status"] == "ok" and row["kind"] == "sparse":
                series[row["contender"]].append(row)
        for contender, points in series.items():
            points.sort(key=lambda r: r["sparsity"])
            usable = [r for r in points if is_usable(r)]
            measured = [r for r in usable if not r.get("kept_dense")]
            at_90 = _at_90(usable)
            figure_at_90 = at_90 if at_90 is not None and not at_90.get("kept_dense") else None
            table.append(
                {
                    "out_features": key[0],
                    "in_features": key[1],
                    "pattern": key[2],
                    "batch": key[3],
                    "contender": contender,
                    "headline": contender == headline,
                    "break_even_sparsity": break_even(
                        [r["sparsity"] for r in measured],
                        [r["speedup"] for r in measured],
                        [r["sparsity"] for r in usable if r.get("kept_dense")],
                    ),
                    "speedup_at_90": _value(figure_at_90, "speedup"),
                    "speedup_vs_best_dense_at_90": _value(figure_at_90, "speedup_vs_best_dense"),
                    "speedup_vs_own_dense_at_90": _value(figure_at_90, "speedup_vs_own_dense"),
                    "speedup_vs_alternative_at_90": _value(figure_at_90, "speedup_vs_alternative"),
                    "alternative_at_90": (figure_at_90 or {}).get("alternative") or None,
                    "format_at_90": at_90.get("format") or contender if at_90 else None,
                    "kept_dense_at_90": bool(at_90 and at_90.get("kept_dense")),
                    "flag_at_90": (figure_at_90 or {}).get("flag", ""),
                    "cache": "/".join(sorted({r.get("cache", "warm") for r in points})),
                    "baseline": baselines_label(points),
                    "excluded": [r["sparsity"] for r in points if not is_usable(r)],
                }
            )
    return table


def alternatives_at_90(rows: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, float]]:
    """Per point key, each alternative's (int8/bf16 dense) speedup over the baseline at 90%."""
    found: dict[tuple, dict[str, float]] = defaultdict(dict)
    for row in rows:
        if row["status"] == "ok" and row["kind"] == "alternative" and is_usable(row):
            if abs(row["sparsity"] - 0.9) < 1e-9 and not math.isnan(row["speedup"]):
                found[point_key(row)][row["contender"]] = row["speedup"]
    return dict(found)


def _value(row: dict[str, Any] | None, column: str) -> float | None:
    if row is None:
        return None
    value = row.get(column, math.nan)
    return None if value is None or math.isnan(value) else value
