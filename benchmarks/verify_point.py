#!/usr/bin/env python
"""Measure one configuration on its own, to check a figure of ``sparsegemm bench``.

    python benchmarks/verify_point.py 4096x4096 16 0.9 sgemm_csr
    python benchmarks/verify_point.py 768x3072 1 0.95 sgemm_csr --against bench_results/results.json

It builds the same pruned weight as the suite (same seed), checks the output,
then times the format and the dense references with its own simple loop: at
least 20 repeats, interleaved, each a block of calls after a warm-up, median
taken. Only the operands come from the package; the timing loop and the cold
rotation are separate from the suite's harness, so agreement (within 20%) is an
independent check.

``--cold`` converts the weight into enough separate copies (each converted
from its own copy of the dense weight) to exceed twice the last-level cache
and rotates through them; ``--warm`` calls one copy. By default it follows the
suite: cold for batch <= 16. With ``--against`` the mode and, for
``sgemm_auto``, the format are taken from the suite's row, so both time the
same kernel the same way. Exit status 1 when ``--against`` disagrees by more
than ``--tolerance``.

``--processes N`` measures in N fresh processes (memory layout, page placement
and thread wake-ups differ between processes) and compares the median of their
speedups, as ``sparsegemm bench --processes N`` merges its own. Against such a
suite run, process i times the format the suite's process i ran.
"""


from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import sparsegemm
from sparsegemm.bench import contenders as registry
from sparsegemm.bench.environment import last_level_cache_bytes, reexec_with_timing_env
from sparsegemm.bench.harness import check_output
from sparsegemm.bench.workloads import (
    Point,
    WeightCache,
    parse_pattern,
    parse_shape,
    parse_sparsity,
)
from sparsegemm.timing import thread_limits

MAX_COPIES = 1024


def _copies(footprint_bytes: int) -> int:
    """Copies whose footprints add up to twice the last-level cache (at most MAX_COPIES)."""
    llc, _ = last_level_cache_bytes()
    return max(1, min(MAX_COPIES, -(-2 * llc // max(1, footprint_bytes))))


def _cold_rotation(build, weight: np.ndarray, problem_for, footprint_bytes: int):
    """``build`` on separate copies of ``weight`` (each converted on its own), rotated."""
    calls = [build(problem_for(weight.copy())) for _ in range(_copies(footprint_bytes))]
    position = [0]

    def call():
        position[0] = (position[0] + 1) % len(calls)
        return calls[position[0]]()

    return call, len(calls)


def _block_median(calls: dict, repeats: int, block_s: float) -> tuple[dict, dict]:
    sizes = {}
    for name, call in calls.items():
        # size each block from the calls after a first one: the first pays the thread
        # pools' wake-up and the cache refill, so sized from it alone a short call
        # gets short blocks whose slow first calls weigh on every sample
        call()
        probe = 0
        start = time.perf_counter()
        # at least one probe call, even when the process was descheduled past block_s / 10
        while probe == 0 or (time.perf_counter() - start < block_s / 10 and probe < 500):
            call()
            probe += 1
        per_call = (time.perf_counter() - start) / probe
        sizes[name] = max(1, min(500, round(block_s / max(per_call, 1e-7))))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            time.sleep(0.002)
            calls[name]()
            start = time.perf_counter()
            for _ in range(sizes[name]):
                calls[name]()
            samples[name].append((time.perf_counter() - start) / sizes[name])
    return {name: statistics.median(values) for name, values in samples.items()}, sizes


def _suite_row(path: str, point: Point, fmt: str, dtype: str, threads: int) -> dict | None:
    with open(path, encoding="utf-8") as handle:
        rows = json.load(handle)["results"]
    for row in rows:
        if (
            row["out_features"],
            row["in_features"],
            row["batch"],
            row["contender"],
            row["pattern"],
            row["dtype"],
            row["threads"],
            row["status"],
        ) == (
            point.out_features,
            point.in_features,
            point.batch,
            fmt,
            point.pattern.name,
            dtype,
            threads,
            "ok",
        ) and abs(row["sparsity"] - point.sparsity) < 1e-9:
            return row
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", help="OUTxIN")
    parser.add_argument("batch", type=int)
    parser.add_argument("sparsity")
    parser.add_argument(
        "format", help="a contender name, e.g. sgemm_csr (see sparsegemm bench --list-formats)"
    )
    parser.add_argument("--pattern", default="unstructured")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--block-ms", type=float, default=20.0, help="duration of a timed block")
    parser.add_argument("--seed", type=int, default=0, help="must match the suite's --seed")
    parser.add_argument("--against", metavar="RESULTS_JSON", help="compare with a suite run")
    parser.add_argument("--tolerance", type=float, default=0.2)
    parser.add_argument("--processes", type=int, default=1,
                        help="measure in N fresh processes; compare their median speedup")
    parser.add_argument(
        "--speedups-from", metavar="DIR",
        help="measure nothing: take the median of the figures single processes saved "
        "in DIR/process-N/ (see benchmarks/floors_check.py)",
    )
    parser.add_argument("--process-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--speedup-out", help=argparse.SUPPRESS)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cold", dest="cache", action="store_const", const="cold")
    mode.add_argument("--warm", dest="cache", action="store_const", const="warm")
    args = parser.parse_args(argv)
    if args.repeats < 20:
        parser.error("use at least 20 repeats")
    if args.format not in registry.REGISTRY:
        parser.error(f"unknown format {args.format!r}; known: {sorted(registry.REGISTRY)}")
    if args.processes < 1:
        parser.error("--processes must be >= 1")
    m, k = parse_shape(args.shape)
    point = Point(m, k, args.batch, parse_sparsity(args.sparsity), parse_pattern(args.pattern))
    threads = args.threads or sparsegemm.get_num_threads()
    row = None
    if args.against:
        row = _suite_row(args.against, point, args.format, args.dtype, threads)
        if row is None:
            print(f"no matching ok row in {args.against}")
            return 2
    if args.speedups_from:
        return _median_against(_saved_processes(args), args, row)
    if args.processes > 1:
        return _in_processes(argv if argv is not None else sys.argv[1:], args, row)
    if row is not None and row.get("kept_dense"):
        print(f"the suite's planner kept this weight dense ({row['format']}): no sparse figure")
        _report(args, None, row["format"])
        return 0
    cold = (args.cache or (row or {}).get("cache") or ("cold" if point.batch <= 16 else "warm"))
    cold = cold == "cold"
    # the format the suite's row ran (sgemm_auto's choice), else the contender itself;
    # with a suite run in several processes, the one its process of this index ran
    planned = None
    if args.format == "sgemm_auto" and row is not None:
        formats = row.get("process_formats") or [row.get("format")]
        planned = formats[args.process_index % len(formats)]
        if planned.startswith("dense"):  # that suite process kept the weight dense
            print(f"the suite's process {args.process_index + 1} kept this weight dense")
            _report(args, None, planned)
            return 0

    cache = WeightCache(np.dtype(args.dtype), seed=args.seed)
    weight, x = cache.pruned(point), cache.inputs(point.batch, point.in_features)

    def problem_for(w: np.ndarray) -> registry.Problem:
        return registry.Problem(weight=w, x=x, pattern=point.pattern, threads=threads)

    reference = x.astype(np.float64) @ weight.T.astype(np.float64)
    names = [
        n
        for n in ("numpy_dense", "torch_dense", args.format)
        if registry.unavailable_reason(registry.REGISTRY[n]) is None
    ]
    names = list(dict.fromkeys(names))
    copies = {}
    with thread_limits(threads, include_torch="torch_dense" in names):
        calls = {}
        for name in names:
            contender = registry.REGISTRY[name]
            build = contender.build
            if name == args.format and planned:
                def build(problem):
                    return registry.sparsegemm_call(problem, planned)
            footprint = (
                weight.nbytes
                if contender.kind == "dense"
                else int(np.count_nonzero(weight)) * weight.itemsize
            )
            try:
                if cold:
                    calls[name], copies[name] = _cold_rotation(
                        build, weight, problem_for, footprint
                    )
                else:
                    calls[name], copies[name] = build(problem_for(weight)), 1
            except registry.Unsupported as reason:
                print(f"{name} cannot run this point: {reason}")
                return 2
            check_output(calls[name](), reference, k)
        medians, block_calls = _block_median(calls, args.repeats, args.block_ms / 1e3)

    dense = {n: t for n, t in medians.items() if registry.REGISTRY[n].kind == "dense"}
    baseline = (
        min(dense, key=dense.__getitem__)
        if point.batch == 1 or "torch_dense" not in dense
        else "torch_dense"
    )
    speedup = dense[baseline] / medians[args.format]
    print(
        f"{m}x{k} batch {point.batch} sparsity {point.sparsity:g} {point.pattern} "
        f"{args.dtype}, {threads} threads, {'cold' if cold else 'warm'}, {args.repeats} "
        f"interleaved repeats (median):"
    )
    for name, seconds in medians.items():
        print(f"  {name:<12} {seconds * 1e3:9.3f} ms  ({copies[name]} weight copies, "
              f"blocks of {block_calls[name]} calls)")
    ran = f" ({planned})" if planned else ""
    print(f"  speedup of {args.format}{ran} vs {baseline}: {speedup:.2f}x")
    _report(args, speedup, planned or args.format)
    return 0 if row is None else _compare(speedup, row, args.tolerance)


def _report(args: argparse.Namespace, speedup: float | None, ran: str) -> None:
    """A child of --processes writes its figure (None: no sparse figure) for its parent."""
    if args.speedup_out:
        with open(args.speedup_out, "w", encoding="utf-8") as handle:
            json.dump({"speedup": speedup, "format": ran}, handle)


def _compare(speedup: float, row: dict, tolerance: float) -> int:
    ratio = speedup / row["speedup"]
    agrees = abs(ratio - 1.0) <= tolerance
    print(
        f"  suite said {row['speedup']:.2f}x (vs {row['baseline']}): ratio {ratio:.2f} -> "
        f"{'agrees' if agrees else 'DISAGREES'} within {tolerance:.0%}"
    )
    return 0 if agrees else 1


def point_file_name(shape: str, batch: int, pattern: str) -> str:
    """The file a process's figure for one point is kept in (see --speedups-from)."""
    return f"{shape}-{pattern.replace(':', '')}-b{batch}.json"


def _in_processes(argv: list[str], args: argparse.Namespace, row: dict | None) -> int:
    """Run this point in ``args.processes`` fresh processes; compare their median speedup
    with the suite's ``row`` (None: no comparison)."""
    measured = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.processes):
            out = os.path.join(folder, f"process-{index}.json")
            command = [sys.executable, os.path.abspath(__file__), *argv, "--processes", "1",
                       "--process-index", str(index), "--speedup-out", out]
            if args.against:
                command.extend(["--tolerance", "inf"])  # each process only reports
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0 or not os.path.exists(out):
                print(done.stdout + done.stderr)
                print(f"process {index + 1} failed (status {done.returncode})")
                return 2
            with open(out, encoding="utf-8") as handle:
                measured.append(json.load(handle))
    return _median_against(measured, args, row)


def _saved_processes(args: argparse.Namespace) -> list[dict]:
    """The figures earlier single processes saved for this point under
    ``args.speedups_from``/process-N/ (as benchmarks/floors_check.py runs them)."""
    name = point_file_name(args.shape, args.batch, args.pattern)
    folders = sorted(
        (entry for entry in os.listdir(args.speedups_from) if entry.startswith("process-")),
        key=lambda entry: int(entry.split("-", 1)[1]),
    )
    measured = []
    for folder in folders:
        path = os.path.join(args.speedups_from, folder, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                measured.append(json.load(handle))
    return measured


def _median_against(measured: list[dict], args: argparse.Namespace, row: dict | None) -> int:
    """The median of the processes' speedups, compared with the suite's ``row``."""
    speedups = []
    suite_format = (row or {}).get("format") if args.format == "sgemm_auto" else None
    for index, figure in enumerate(measured):
        if figure["speedup"] is None:  # kept dense there: no sparse figure to compare
            print(f"  process {index + 1}: {figure['format']}, no sparse figure")
            continue
        if suite_format and figure["format"] != suite_format:
            # the suite's figure is the median of the processes that ran its format
            print(f"  process {index + 1}: {figure['format']} "
                  f"{figure['speedup']:.2f}x, not the suite's format ({suite_format}): "
                  "left out")
            continue
        speedups.append(figure["speedup"])
        print(f"  process {index + 1}: {figure['format']} {figure['speedup']:.2f}x")
    if not speedups:
        print("  no process measured a sparse figure to compare")
        return 0 if row is None or row.get("kept_dense") else 2
    speedup = statistics.median(speedups)
    print(f"  median of {len(speedups)} processes: {speedup:.2f}x "
          f"(spread {max(speedups) / min(speedups):.2f}x)")
    return 0 if row is None else _compare(speedup, row, args.tolerance)


if __name__ == "__main__":
    # The suite's timing environment (thread-pool spin, allocator): set before the process starts.
    reexec_with_timing_env([sys.executable, os.path.abspath(__file__), *sys.argv[1:]])
    sys.exit(main())
