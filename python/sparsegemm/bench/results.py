"""The result files: one CSV row per (point, contender) and a JSON with metadata.

:data:`COLUMNS` is the single definition of the columns; benchmarks/README.md
documents the same list (a test keeps them in step).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from typing import Any

SCHEMA = "sparsegemm-bench/1"

COLUMNS: dict[str, str] = {
    "out_features": "M: rows of the weight W (out_features of the layer)",
    "in_features": "K: columns of W (in_features)",
    "batch": "N: rows of the input x (tokens, or H*W for a 1x1 conv)",
    "sparsity": "target fraction of zeros in W",
    "actual_sparsity": "fraction of zeros in the pruned W",
    "pattern": "pruning pattern: unstructured or block:RxC",
    "label": "the model layer the point stands for (layer suite), else empty",
    "dtype": "float32 or float64",
    "threads": "thread count given to every multi-threaded contender",
    "contender": "registry name, e.g. torch_dense, sgemm_csr",
    "kind": "dense (a reference); alternative (int8 or bf16 dense: what a user could pick "
    "instead of pruning, checked to a relative error); or sparse",
    "is_sparsegemm": "True for sparsegemm's own contenders",
    "threading": "multi-threaded or single-threaded",
    "status": "ok; skipped (cannot run this point); wrong (output check failed, not timed); error",
    "detail": "reason for a status other than ok, or the planner's choice for sgemm_auto "
    "with its own measured speedup (made before the benchmark timed anything)",
    "format": "the format sparsegemm ran (csr, bsr4x4, ...), or the dense library sgemm_auto "
    "ran when the planner kept the weight dense",
    "kept_dense": "True when the planner kept the weight dense: a dense library ran, so the row "
    "has no speedup and is never a sparsegemm figure",
    "cache": "cold (each call uses the next of several weight copies that together exceed the "
    "last-level cache twice), partly cold (the most copies allowed still fit in it) or warm "
    "(one weight, called repeatedly)",
    "cold_copies": "copies of the weight a cold run rotates through (1 when warm)",
    "time_median_s": "median seconds per call over the samples",
    "time_q1_s": "first quartile of the samples",
    "time_q3_s": "third quartile of the samples",
    "time_min_s": "fastest sample",
    "time_max_s": "slowest sample",
    "samples": "number of samples (rounds); each is the mean of a block of calls",
    "calls_per_sample": "calls in each timed block",
    "baseline": "the dense contender speedup is measured against (batch 1: the faster of "
    "numpy and torch; otherwise torch F.linear, or numpy without torch)",
    "baseline_time_s": "the baseline's median seconds per call",
    "speedup": "baseline_time_s / time_median_s",
    "best_dense": "the fastest dense contender at this point",
    "speedup_vs_best_dense": "fastest dense contender's median / time_median_s",
    "own_dense_time_s": "sparsegemm's own kernel, same format, on the weight before pruning "
    "(sparsity 0), timed in the same rounds",
    "speedup_vs_own_dense": "own_dense_time_s / time_median_s: the gain sparsity itself brings",
    "alternative": "the fastest alternative (int8/bf16 dense) at this point, for sparsegemm rows",
    "speedup_vs_alternative": "that alternative's median / time_median_s",
    "flag": "why a speedup above 1/(1-sparsity) is suspect, else empty",
    "useful_gflops": "2*nnz*batch / time: the work the contender had to do",
    "effective_gflops": "2*M*K*batch / time: the dense-equivalent rate",
    "baseline_gflops": "2*M*K*batch / baseline_time_s",
    "max_rel_error": "max |y - y_ref| / max |y_ref| against a float64 dense product "
    "(alternatives: the relative Frobenius error)",
    "remeasured": "extra attempts made because the dense reference was unsteady, plus one when "
    "the point was measured again as suspect",
    "steady": "False if the dense reference's samples still disagreed by over 1.35x",
    "suspect": "why the point is left out of break-evens (unsteady or out of line even after "
    "re-measuring), else empty",
    "processes": "fresh processes the point was measured in (--processes)",
    "format_processes": "of those, the ones that ran this row's format: the figures are "
    "their medians",
    "process_speedups": "each process's speedup, when measured in several processes "
    "(null where it kept the weight dense)",
    "process_formats": "the format each process ran (sgemm_auto's planner decides per process)",
    "process_spread": "max / min of the speedups of the processes that ran this row's format "
    "(1.0 = they agree)",
    "x_alignment": "address of x modulo 64 bytes (0 = cache-line aligned)",
    "weight_alignment": "address of the pruned dense weight modulo 64 bytes",
}


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return "" if value is None else value


def write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: _csv_value(row.get(column)) for column in COLUMNS})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(
    path: str,
    *,
    metadata: dict[str, Any],
    settings: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    break_even: Sequence[dict[str, Any]],
    notes: Sequence[str],
) -> None:
    document = {
        "schema": SCHEMA,
        "metadata": metadata,
        "settings": settings,
        "notes": list(notes),
        "results": list(rows),
        "break_even": list(break_even),
    }
    with open(path, "w", encoding="utf-8") as handle:
        dump_json(handle, document)


def dump_json(handle: Any, document: dict[str, Any]) -> None:
    """Strict JSON: NaN and infinities become null, other odd values strings."""
    json.dump(_json_safe(document), handle, indent=1, default=str, allow_nan=False)
    handle.write("\n")


def load_json(path: str) -> dict[str, Any]:
    """A results JSON written by :func:`write_json`; ValueError if it is not one."""
    document = load_document(path)
    for row in document["results"]:
        for column in (
            "speedup",
            "speedup_vs_best_dense",
            "speedup_vs_own_dense",
            "speedup_vs_alternative",
            "time_median_s",
        ):
            if row.get(column) is None:
                row[column] = math.nan
    return document


def load_document(path: str) -> dict[str, Any]:
    """Any JSON document of the bench (results.json, e2e.json), as written: ValueError
    if it is not one."""
    if not os.path.isfile(path):
        raise ValueError(f"no such results file: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a sparsegemm bench result (schema {SCHEMA!r})")
    return document
