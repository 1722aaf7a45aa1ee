#!/usr/bin/env python
"""Measure issue #14's floor points with the suite and the separate harness, interleaved.

    python benchmarks/floors_check.py --processes 5 --out docs/results

For each cache mode it runs, ``--processes`` times in turn: one fresh suite
process over all floor points (``sparsegemm bench ... --processes 1`` into
``floors-MODE/process-N/``), then one fresh ``benchmarks/verify_point.py``
process per point, timing the format that suite process chose. Then it merges
the suite's processes into ``floors-MODE/results.json`` (the README's figures,
as ``sparsegemm bench --processes N`` merges them) and compares, point by
point, the median of the separate harness's processes with the suite's merged
figure.

Interleaving is the point: on this VM a whole run moves by 15-25% between
hours, so a suite run followed an hour later by its check compares two times
of day as much as two harnesses. Here both sample the same minutes.
Exit status 1 when any point disagrees by more than 20%.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import verify_point  # noqa: E402  (the separate harness, beside this script)
from sparsegemm.bench.processes import child_command  # noqa: E402

SHAPES = ("4096x4096", "768x3072")
PATTERNS = ("unstructured", "block:4x4")
BATCHES = (1, 16, 64, 256)
SPARSITY = "0.9"
FORMAT = "sgemm_auto"


def suite_arguments(mode: str) -> list[str]:
    """The suite's options for one cache mode (the README's floors-MODE command, whose
    processes add --no-plot themselves)."""
    return [
        "--shape", ",".join(SHAPES), "--batch", ",".join(map(str, BATCHES)),
        "--sparsity", SPARSITY, "--pattern", ",".join(PATTERNS), "--formats", FORMAT,
        f"--{mode}",
    ]


def points() -> list[tuple[str, int, str]]:
    return [(shape, batch, pattern)
            for shape in SHAPES for pattern in PATTERNS for batch in BATCHES]


def _verify_command(shape: str, batch: int, pattern: str, mode: str, *extra: str) -> list[str]:
    return [sys.executable, os.path.join(HERE, "verify_point.py"), shape, str(batch), SPARSITY,
            FORMAT, "--pattern", pattern, f"--{mode}", *extra]


def _run(command: list[str], quiet: bool = False) -> int:
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=quiet, text=True, check=False)
    if quiet and done.returncode != 0:
        print(done.stdout + done.stderr, flush=True)
    return done.returncode


def measure_mode(mode: str, processes: int, out: str) -> None:
    """The interleaved measurements of one mode: suite process, then its checks, N times."""
    folder = os.path.join(out, f"floors-{mode}")
    shutil.rmtree(os.path.join(folder, "verify"), ignore_errors=True)
    for index in range(1, processes + 1):
        print(f"== {mode}: suite process {index} of {processes}", flush=True)
        suite_folder = os.path.join(folder, f"process-{index}")
        # the same command as a child of `sparsegemm bench --processes N`
        status = _run(child_command(suite_arguments(mode), suite_folder), quiet=True)
        if status != 0:
            raise SystemExit(f"suite process {index} failed (status {status})")
        verify_folder = os.path.join(folder, "verify", f"process-{index}")
        os.makedirs(verify_folder, exist_ok=True)
        for shape, batch, pattern in points():
            saved = os.path.join(verify_folder, verify_point.point_file_name(shape, batch, pattern))
            status = _run(_verify_command(
                shape, batch, pattern, mode,
                "--against", os.path.join(suite_folder, "results.json"),
                "--tolerance", "inf", "--speedup-out", saved,
            ), quiet=True)
            if status != 0:
                print(f"  verify process failed (status {status}): this point has no figure "
                      f"from process {index}", flush=True)
    status = _run([sys.executable, "-m", "sparsegemm.bench", "bench", *suite_arguments(mode),
                   "--no-plot", "--processes", str(processes), "--merge", "--out", folder,
                   "--no-progress"], quiet=True)
    if status != 0:
        raise SystemExit(f"merging the suite's processes failed (status {status})")


def compare_mode(mode: str, out: str) -> int:
    """Each point's separate-harness median against the suite's merged figure; 1 on any
    disagreement."""
    folder = os.path.join(out, f"floors-{mode}")
    worst = 0
    for shape, batch, pattern in points():
        print(f"== {mode} {shape} {pattern} batch {batch}", flush=True)
        status = _run(_verify_command(
            shape, batch, pattern, mode,
            "--against", os.path.join(folder, "results.json"),
            "--speedups-from", os.path.join(folder, "verify"),
        ))
        worst = max(worst, status)
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--modes", default="cold,warm")
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--compare-only", action="store_true",
                        help="measure nothing: compare what an earlier run left in --out")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be >= 1")
    modes = [mode for mode in args.modes.split(",") if mode]
    if not modes or any(mode not in ("cold", "warm") for mode in modes):
        parser.error("--modes takes cold, warm or both")
    status = 0
    for mode in modes:
        if not args.compare_only:
            measure_mode(mode, args.processes, args.out)
        status = max(status, compare_mode(mode, args.out))
    print("all points agree within 20%" if status == 0 else "some points DISAGREE or failed")
    return status


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    sys.exit(main())
