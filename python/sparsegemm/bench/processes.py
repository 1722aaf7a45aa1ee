"""``sparsegemm bench --processes N``: the same suites in N fresh processes, merged.

A process starts with its own memory layout, thread placement and allocator
state, so a figure that only one process saw shows up as a spread between
processes. Each child runs the suite with ``--processes 1`` into its own folder
(its own ``results.json``, with its affinity and alignment); the parent merges:
each ratio is the median of the per-process ratios (every ratio is measured
within one process, interleaved), and ``process_spread`` is how far apart they
were.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from .e2e import E2E_COLUMNS
from .results import load_document, load_json

#: Columns that identify a row across processes.
ROW_KEY = (
    "out_features",
    "in_features",
    "batch",
    "sparsity",
    "pattern",
    "label",
    "dtype",
    "threads",
    "contender",
)
#: Per-process figures merged as medians.
MEDIAN_COLUMNS = (
    "time_median_s",
    "baseline_time_s",
    "own_dense_time_s",
    "speedup",
    "speedup_vs_best_dense",
    "speedup_vs_own_dense",
    "speedup_vs_alternative",
    "useful_gflops",
    "effective_gflops",
    "baseline_gflops",
)


def child_command(argv: Sequence[str], out: str) -> list[str]:
    """The command of one child: the parent's options, one process, its own folder."""
    return [
        sys.executable,
        "-m",
        "sparsegemm.bench",
        "bench",
        *argv,
        "--processes",
        "1",
        "--out",
        out,
        "--no-plot",
        "--no-progress",
    ]


#: What a child writes per suite, and how it is read (end-to-end rows have no kernel
#: columns to fill in): the kernel suite's document and the end-to-end suite's.
CHILD_DOCUMENTS = {"kernel": ("results.json", load_json), "e2e": ("e2e.json", load_document)}


def run_children(
    argv: Sequence[str], processes: int, out: str, suites: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Run the bench in ``processes`` fresh processes, one after the other; each suite's
    documents (``suites``: keys of :data:`CHILD_DOCUMENTS`), in process order."""
    for index in range(processes):
        folder = os.path.join(out, f"process-{index + 1}")
        print(f"sparsegemm bench: process {index + 1} of {processes} -> {folder}", file=sys.stderr)
        done = subprocess.run(child_command(argv, folder), check=False)
        if done.returncode not in (0, 1):  # 1: a sparsegemm contender was wrong; still merged
            raise RuntimeError(f"process {index + 1} failed with status {done.returncode}")
    return load_children(processes, out, suites, after_run=True)


def load_children(
    processes: int, out: str, suites: Sequence[str], *, after_run: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """The documents the children left in ``out``/process-1..``processes``."""
    documents: dict[str, list[dict[str, Any]]] = {suite: [] for suite in suites}
    for index in range(processes):
        for suite in suites:
            name, load = CHILD_DOCUMENTS[suite]
            path = os.path.join(out, f"process-{index + 1}", name)
            if not os.path.exists(path):
                if after_run:
                    raise RuntimeError(f"process {index + 1} wrote no {path}")
                raise ValueError(f"--merge: no {path} (was --processes {processes} run there?)")
            documents[suite].append(load(path))
    return documents


def merge_rows(row_lists: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per key: medians of the per-process figures, and their spread.

    The planner decides in each process, so processes may run different formats:
    the row takes the format most of them ran, and its figures are the medians
    over those processes only (``format_processes`` counts them).

    A row that was not ok in some process keeps that process's status (a wrong
    answer in one process is a wrong answer); a point unsteady in any process is
    unsteady.
    """
    merged = []
    for group in _groups(row_lists, ROW_KEY):
        failed = [r for r in group if r["status"] != "ok"]
        row = dict(failed[0] if failed else _majority_format(group))
        row["processes"] = len(group)
        if not failed:
            # The figures are those of the processes that ran the row's format: a
            # median mixing in another format's timings would not be this format's.
            ran_format = [r for r in group if r.get("format") == row.get("format")]
            # a process whose planner kept the weight dense has no sparse figure
            measured = {column: [v for v in (_number(r.get(column)) for r in ran_format)
                                 if not math.isnan(v)] for column in MEDIAN_COLUMNS}
            for column, values in measured.items():
                row[column] = statistics.median(values) if values else math.nan
            if row.get("kept_dense"):
                for column in SPARSE_COLUMNS:
                    row[column] = math.nan
            row["format_processes"] = len(ran_format)
            # every process's figure and format, including the ones left out above
            row["process_speedups"] = [_number(r.get("speedup")) for r in group]
            row["process_formats"] = [r.get("format") for r in group]
            speedups = measured["speedup"]
            row["process_spread"] = max(speedups) / min(speedups) if speedups else 1.0
            row["steady"] = all(r.get("steady", True) for r in group)
            row["x_alignment"] = sorted({r.get("x_alignment") for r in group}, key=str)
            row["weight_alignment"] = sorted({r.get("weight_alignment") for r in group}, key=str)
        merged.append(row)
    return merged


#: Figures a row has only where sparsegemm ran sparse (not where the planner kept dense).
SPARSE_COLUMNS = ("speedup", "speedup_vs_best_dense", "speedup_vs_own_dense",
                  "speedup_vs_alternative")


def _majority_format(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The row of the first process that ran the format most processes ran (the planner
    decides per process; where most kept the weight dense, the merged row is kept dense)."""
    formats = [r.get("format") for r in group]
    majority = max(dict.fromkeys(formats), key=formats.count)
    return next(r for r in group if r.get("format") == majority)


def _groups(
    row_lists: Sequence[Sequence[dict[str, Any]]], key: Sequence[str]
) -> list[list[dict[str, Any]]]:
    """The processes' rows grouped by their values of ``key``, in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for rows in row_lists:
        for row in rows:
            groups.setdefault(tuple(row.get(k) for k in key), []).append(row)
    return list(groups.values())


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


#: Columns that identify an end-to-end row across processes.
E2E_ROW_KEY = ("model", "input_shape", "sparsity", "pattern", "format")
#: Per-process end-to-end figures merged as medians (each ratio measured within a
#: process): every time and every speedup column.
E2E_MEDIAN_COLUMNS = tuple(
    column for column in E2E_COLUMNS
    if column.endswith(("_s", "speedup")) or column.startswith("vs_")
)


def merge_e2e_rows(row_lists: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One end-to-end row per model, sparsity, pattern and format: the medians of the
    processes' figures, every process's speedup and their spread.

    A row that failed or mismatched in any process keeps that process's status; its
    worst output error is kept, and it is steady only if it was steady everywhere.
    A figure some processes lack (DeepSparse skipped there) is the median of the rest.
    """
    merged = []
    for group in _groups(row_lists, E2E_ROW_KEY):
        failed = [r for r in group if r["status"] != "ok"]
        row = dict(failed[0] if failed else group[0])
        row["processes"] = len(group)
        for column in E2E_MEDIAN_COLUMNS:
            values = [v for v in (_number(r.get(column)) for r in group) if not math.isnan(v)]
            if values:
                row[column] = statistics.median(values)
        errors = [v for v in (_number(r.get("max_rel_error")) for r in group) if not math.isnan(v)]
        if errors:
            row["max_rel_error"] = max(errors)
        row["steady"] = all(r.get("steady", True) for r in group)
        speedups = [_number(r.get("speedup")) for r in group]
        row["process_speedups"] = speedups
        measured = [v for v in speedups if not math.isnan(v) and v > 0]
        row["process_spread"] = max(measured) / min(measured) if measured else 1.0
        merged.append(row)
    return merged
