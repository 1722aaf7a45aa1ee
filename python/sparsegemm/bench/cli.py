"""The ``sparsegemm`` command: ``sparsegemm bench`` shows when pruned weights beat dense GEMM.

Suites: the quick default (a few minutes on 2 cores), ``--full`` (the whole grid),
``--layers`` (real models' layer shapes), ``--quick-test`` (seconds, for tests)
and ``--e2e`` (whole PyTorch blocks). ``--compare old.json new.json`` diffs runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import sparsegemm

from . import contenders as registry
from .analysis import break_even_table
from .compare import compare_files
from .environment import machine_metadata, missing_timing_env, reexec_with_timing_env
from .harness import HarnessSettings
from .processes import load_children, merge_e2e_rows, merge_rows, run_children
from .report import (
    break_even_lines,
    machine_summary,
    markdown_report,
    terminal_table,
    wrong_sparsegemm_rows,
)
from .results import SCHEMA, dump_json, write_csv, write_json
from .suite import COLD_MAX_BATCH, SuiteSpec, mark_suspects, run_suite
from .workloads import (
    DEFAULT_BATCHES,
    DEFAULT_BLOCK_PATTERN,
    FULL_SHAPES,
    FULL_SPARSITIES,
    QUICK_SHAPES,
    QUICK_SPARSITIES,
    Pattern,
    grid,
    layer_grid,
    load_layer_shapes,
    parse_pattern,
    parse_shape,
    parse_sparsity,
)

MODULE = "sparsegemm.bench"


@dataclass(frozen=True)
class SuitePreset:
    shapes: tuple[tuple[int, int], ...]
    batches: tuple[int, ...]
    sparsities: tuple[float, ...]
    harness: HarnessSettings
    quick: bool
    description: str


PRESETS = {
    "quick": SuitePreset(
        QUICK_SHAPES,
        DEFAULT_BATCHES,
        QUICK_SPARSITIES,
        HarnessSettings(
            rounds=5, target_block_s=0.02, max_calls=1000, max_remeasure=1, max_contender_s=0.3
        ),
        True,
        "quick suite: 5 samples per contender (blocks of ~20 ms; fewer samples for a contender "
        "that would take over ~0.3 s per point, see the samples column), one re-measurement at "
        "most; scipy only at batch <= 16; scipy and torch CSR only on unstructured weights. "
        "Run --full for the whole grid with more samples",
    ),
    "full": SuitePreset(
        FULL_SHAPES,
        DEFAULT_BATCHES,
        FULL_SPARSITIES,
        HarnessSettings(
            rounds=9, target_block_s=0.03, max_calls=200, max_remeasure=2, max_contender_s=5.0
        ),
        False,
        "full suite: 9 samples per contender (blocks of ~30 ms; fewer for a contender that "
        "would take over ~5 s per point), up to two re-measurements",
    ),
    "quick-test": SuitePreset(
        ((64, 128),),
        (1, 8),
        (0.5, 0.9),
        HarnessSettings(
            rounds=3, target_block_s=0.0005, max_calls=5, sleep_s=0.0005, max_remeasure=0
        ),
        False,
        "quick-test suite: a tiny size to check the machinery; its timings mean nothing",
    ),
}


def _split(values: Sequence[str] | None) -> list[str]:
    """Repeatable options may also hold comma-separated lists."""
    return [part for value in values or () for part in value.split(",") if part.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsegemm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    bench = commands.add_parser(
        "bench",
        help="measure when pruned weights beat dense GEMM on this machine",
        description="Measure sparse x dense against dense GEMM over shapes, batches and "
        "sparsities; writes CSV, JSON, a plot and a markdown report.",
    )
    suite = bench.add_mutually_exclusive_group()
    suite.add_argument("--full", action="store_true", help="the whole grid (takes much longer)")
    suite.add_argument("--quick-test", action="store_true", help="tiny sizes, seconds (for tests)")
    suite.add_argument(
        "--layers",
        nargs="?",
        const="",
        metavar="CSV",
        help="the layer shapes of real models (the packaged CSV, or this one), each at its own N",
    )
    suite.add_argument(
        "--compare",
        nargs=2,
        metavar=("OLD_JSON", "NEW_JSON"),
        help="show what changed between two results.json files, then exit",
    )
    bench.add_argument(
        "--shape", action="append", metavar="OUTxIN", help="weight shape (repeatable)"
    )
    bench.add_argument("--batch", action="append", metavar="N", help="rows of x (repeatable)")
    bench.add_argument("--sparsity", action="append", metavar="S", help="in [0, 1) (repeatable)")
    bench.add_argument(
        "--pattern",
        action="append",
        metavar="P",
        help="unstructured or block:RxC, e.g. block:4x1 (repeatable)",
    )
    bench.add_argument(
        "--formats",
        metavar="NAMES",
        help=(
            "comma-separated contenders (see --list-formats); the dense references and the "
            "int8/bf16 alternatives always run"
        ),
    )
    bench.add_argument("--list-formats", action="store_true", help="list the contenders and exit")
    bench.add_argument(
        "--threads", type=_positive_int, help="default: sparsegemm.get_num_threads()"
    )
    bench.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    bench.add_argument("--repeats", type=_positive_int, help="samples (rounds) per contender")
    cache = bench.add_mutually_exclusive_group()
    cache.add_argument(
        "--cold",
        dest="cache",
        action="store_const",
        const="cold",
        help="every batch cold: each call uses the next of several weight copies that together "
        "exceed the last-level cache (default: cold for batch <= 16, warm above); the "
        "end-to-end suite rotates through model copies (default: warm)",
    )
    cache.add_argument(
        "--warm",
        dest="cache",
        action="store_const",
        const="warm",
        help="every batch warm: one weight, called repeatedly (it may stay in cache)",
    )
    bench.set_defaults(cache="auto")
    bench.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        metavar="N",
        help="run the suites (kernel and --e2e) in N fresh processes and merge them "
        "(medians, with the spread)",
    )
    bench.add_argument(
        "--merge",
        action="store_true",
        help="with --processes N: merge the process-1..N/ folders an earlier run left in "
        "--out again, without measuring (e.g. after the merge rules changed)",
    )
    bench.add_argument(
        "--out", default="bench_results", metavar="DIR", help="default: bench_results/"
    )
    bench.add_argument(
        "--e2e",
        action="store_true",
        help="also run the end-to-end suite (MLP, BERT layer, ResNet bottleneck)",
    )
    bench.add_argument("--e2e-only", action="store_true", help="run only the end-to-end suite")
    bench.add_argument(
        "--deepsparse-python",
        metavar="PATH",
        help="a python with DeepSparse (its own venv): adds it as an end-to-end contender",
    )
    bench.add_argument("--no-plot", action="store_true")
    bench.add_argument("--no-progress", action="store_true")
    bench.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    return parser


def _list_formats() -> str:
    lines = []
    for contender in registry.REGISTRY.values():
        reason = registry.unavailable_reason(contender)
        status = f"  [unavailable: {reason}]" if reason else ""
        lines.append(
            f"{contender.name:<12} {contender.kind:<6} {contender.description} "
            f"({contender.threading}){status}"
        )
    return "\n".join(lines)


def choose_contenders(requested: str | None, notes: list[str]) -> list[str]:
    """The contenders to run: the dense references and the int8/bf16 alternatives, plus the
    requested (default: all)."""
    names = _split([requested]) if requested else list(registry.REGISTRY)
    unknown = [name for name in names if name not in registry.REGISTRY]
    if unknown:
        raise ValueError(f"unknown formats {unknown}; choose from {sorted(registry.REGISTRY)}")
    dense = [c.name for c in registry.REGISTRY.values() if c.kind in ("dense", "alternative")]
    chosen = []
    for name in dict.fromkeys(dense + names):
        reason = registry.unavailable_reason(registry.REGISTRY[name])
        if reason:
            notes.append(f"{name} skipped: {reason}")
        else:
            chosen.append(name)
    if "scipy_csr" in chosen:
        notes.append("scipy_csr is single-threaded (scipy.sparse has no threaded product)")
    return chosen


def _points(args: argparse.Namespace, preset: SuitePreset, patterns: list[Pattern]) -> list:
    sparsities = [parse_sparsity(s) for s in _split(args.sparsity)] or list(preset.sparsities)
    if args.layers is not None:
        points = layer_grid(load_layer_shapes(args.layers or None), sparsities, patterns)
    else:
        shapes = [parse_shape(s) for s in _split(args.shape)] or list(preset.shapes)
        batches = [_positive_int(b) for b in _split(args.batch)] or list(preset.batches)
        points = grid(shapes, batches, sparsities, patterns)
    for point in points:  # fail before the run, not in the middle of it
        block = point.pattern.blocksize
        if block and (point.out_features % block[0] or point.in_features % block[1]):
            raise ValueError(
                f"shape {point.shape_name} is not a multiple of the block "
                f"{block[0]}x{block[1]} of pattern {point.pattern}"
            )
    return points


def _harness(args: argparse.Namespace, preset: SuitePreset) -> HarnessSettings:
    """The preset's harness settings, with --repeats applied."""
    if not args.repeats:
        return preset.harness
    return HarnessSettings(**{**preset.harness.__dict__, "rounds": args.repeats})


def _run_kernel_suite(
    args: argparse.Namespace,
    preset: SuitePreset,
    threads: int,
    notes: list[str],
    children: dict[str, list[dict[str, Any]]] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if children is not None:
        return _merge_children(args, children["kernel"], notes)
    if args.pattern:
        patterns = [parse_pattern(p) for p in _split(args.pattern)]
    else:
        patterns = [Pattern(), parse_pattern(DEFAULT_BLOCK_PATTERN)]
    spec = SuiteSpec(
        points=_points(args, preset, patterns),
        contenders=choose_contenders(args.formats, notes),
        dtype=np.dtype(args.dtype),
        threads=threads,
        harness=_harness(args, preset),
        quick=preset.quick,
        cache=args.cache,
    )
    if not args.no_progress:
        print(
            f"sparsegemm bench: {len(spec.points)} points x {len(spec.contenders)} contenders "
            f"({', '.join(spec.contenders)}), {threads} threads",
            file=sys.stderr,
        )
    rows = run_suite(spec, progress=not args.no_progress, seed=args.seed)
    return rows, break_even_table(rows)


def _children(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]] | None:
    """With ``--processes N``: every suite's documents from N fresh processes (or, with
    ``--merge``, from the folders an earlier run left); None for a single process."""
    if args.processes < 2:
        return None
    suites = ([] if args.e2e_only else ["kernel"]) + (["e2e"] if args.e2e or args.e2e_only else [])
    if args.merge:
        return load_children(args.processes, args.out, suites)
    return run_children(args.argv, args.processes, args.out, suites)


def _merge_children(
    args: argparse.Namespace, documents: list[dict[str, Any]], notes: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The kernel suite's rows from ``args.processes`` fresh processes, merged."""
    rows = merge_rows([document["results"] for document in documents])
    mark_suspects(rows)
    for document in documents:
        notes += [note for note in document["notes"] if note not in notes]
    notes.append(
        f"{args.processes} fresh processes (see process-*/): each figure is the median over "
        "the processes that ran the row's format; process_spread says how far apart they were"
    )
    return rows, break_even_table(rows)


def _write_kernel_outputs(
    args: argparse.Namespace,
    rows: list,
    table: list,
    metadata: dict,
    settings: dict,
    notes: list[str],
) -> list[str]:
    from .plot import crossover_plot

    written = []
    csv_path, json_path = (
        os.path.join(args.out, "results.csv"),
        os.path.join(args.out, "results.json"),
    )
    write_csv(csv_path, rows)
    write_json(
        json_path, metadata=metadata, settings=settings, rows=rows, break_even=table, notes=notes
    )
    written += [csv_path, json_path]
    plot_name = None
    if not args.no_plot:
        title = (
            f"sparsegemm vs dense: {metadata['cpu_model']}, {metadata['threads']} threads, "
            f"{metadata['date'][:10]}"
        )
        if crossover_plot(os.path.join(args.out, "crossover.png"), rows, table, title):
            plot_name = "crossover.png"
            written.append(os.path.join(args.out, plot_name))
        elif importlib.util.find_spec("matplotlib") is None:
            notes.append("no plot: matplotlib is not installed (pip install 'sparsegemm[bench]')")
        else:
            notes.append("no plot: no sparse contender has a figure to plot")
    report_path = os.path.join(args.out, "report.md")
    with open(report_path, "w", encoding="utf-8") as handle:
        handle.write(markdown_report(metadata, table, notes, plot_name, rows))
    return written + [report_path]


def _run_e2e(
    args: argparse.Namespace,
    threads: int,
    notes: list[str],
    metadata: dict,
    children: dict[str, list[dict[str, Any]]] | None,
) -> list[str]:
    import csv

    from .e2e import E2E_COLUMNS, E2E_SPARSITIES, e2e_table, run_e2e

    e2e_notes: list[str] = []
    rows: list[dict[str, Any]] = []
    if children is not None:
        documents = children["e2e"]
        rows = merge_e2e_rows([document["results"] for document in documents])
        for document in documents:
            e2e_notes += [n for n in document.get("notes", ()) if n not in e2e_notes]
        e2e_notes.append(
            f"end to end: {args.processes} fresh processes; each figure is the median of "
            "theirs (process_speedups and process_spread in e2e.json)"
        )
    else:
        patterns = [parse_pattern(p) for p in _split(args.pattern)] or [Pattern()]
        sparsities = tuple(parse_sparsity(s) for s in _split(args.sparsity)) or E2E_SPARSITIES
        harness = _harness(args, PRESETS["full" if args.full else "quick"])
        for pattern in patterns:
            pattern_rows, pattern_notes = run_e2e(
                sparsities, pattern, threads, harness, deepsparse_python=args.deepsparse_python,
                cold=args.cache == "cold",
            )
            rows += pattern_rows
            e2e_notes += [n for n in pattern_notes if n not in e2e_notes]
    notes += [n for n in e2e_notes if n not in notes]
    json_path = os.path.join(args.out, "e2e.json")
    # written even without rows: its notes say why (a --processes parent reads them)
    with open(json_path, "w", encoding="utf-8") as handle:
        dump_json(
            handle, {"schema": SCHEMA, "metadata": metadata, "results": rows, "notes": e2e_notes}
        )
    if not rows:
        return [json_path]
    print("\nEnd-to-end (dense = the pruned model before sparsify):")
    print(e2e_table(rows))
    csv_path = os.path.join(args.out, "e2e.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(E2E_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return [csv_path, json_path]


def run_bench(args: argparse.Namespace) -> int:
    """The ``bench`` subcommand. Returns the exit status."""
    if args.list_formats:
        print(_list_formats())
        return 0
    if args.compare:
        print(compare_files(*args.compare))
        return 0
    if args.merge and args.processes < 2:
        raise ValueError("--merge re-merges a --processes N run: give the same --processes N")
    started = time.perf_counter()
    preset_name = "full" if args.full else "quick-test" if args.quick_test else "quick"
    preset = PRESETS[preset_name]
    threads = args.threads or sparsegemm.get_num_threads()
    notes: list[str] = []
    if args.layers is not None:
        notes.append(
            "layer suite: each layer's shape at its own N (tokens, or H*W), quick settings"
        )
    elif not args.e2e_only:
        notes.append(preset.description)
    if missing_timing_env():
        notes.append(
            f"timing environment not applied ({', '.join(missing_timing_env())} "
            "unset): timings may include spinning thread pools or page faults"
        )
    os.makedirs(args.out, exist_ok=True)
    metadata = machine_metadata(threads)
    metadata["command"] = " ".join(["sparsegemm bench", *getattr(args, "argv", [])])
    written: list[str] = []
    rows: list = []
    children = _children(args)
    if children is not None:
        documents = next(iter(children.values()))
        metadata["processes"] = [
            {key: document["metadata"].get(key) for key in ("date", "affinity", "timing_env")}
            for document in documents
        ]
    if not args.e2e_only:
        rows, table = _run_kernel_suite(args, preset, threads, notes, children)
    if args.e2e or args.e2e_only:
        written += _run_e2e(args, threads, notes, metadata, children)
    print(machine_summary(metadata))
    if not args.e2e_only:
        print(terminal_table(rows))
        print(
            "\nBreak-even sparsity (sparse faster above it) and speedups at 90% "
            "(* = sparsegemm's headline: the planner's choice):"
        )
        print(break_even_lines(table))
        settings = {
            "suite": preset_name,
            "harness": _harness(args, preset).__dict__,
            "dtype": args.dtype,
            "threads": threads,
            "seed": args.seed,
            "cache": args.cache,
            "cold_max_batch": COLD_MAX_BATCH,
            "processes": args.processes,
        }
        written += _write_kernel_outputs(args, rows, table, metadata, settings, notes)
    for note in notes:
        print(f"note: {note}")
    print(
        f"\nwrote {', '.join(written) or 'nothing'} in {time.perf_counter() - started:.0f} s "
        f"on {metadata['cpu_model']} ({threads} threads)"
    )
    wrong = wrong_sparsegemm_rows(rows)
    if wrong:
        print(
            f"error: {len(wrong)} sparsegemm results were wrong or failed (listed under "
            "'Not measured' above)",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparsegemm`` console script."""
    console = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # help and usage errors print here, the same in any environment
    if args.command != "bench":
        parser.print_help()
        return 2
    if console:  # argv starts with "bench", which `python -m` passes through unchanged
        reexec_with_timing_env([sys.executable, "-m", MODULE, *argv])
    args.argv = argv[1:]
    try:
        return run_bench(args)
    except (ValueError, argparse.ArgumentTypeError) as error:  # bad values or files: a message
        parser.exit(2, f"sparsegemm bench: error: {error}\n")
    return 2
