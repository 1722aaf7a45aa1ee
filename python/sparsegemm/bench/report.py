"""Human-readable output: the terminal table and the markdown report."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .analysis import alternatives_at_90, baselines_label, format_break_even, point_key
from .environment import numpy_blas_summary


def _shape(row: dict[str, Any]) -> str:
    return f"{row['out_features']}x{row['in_features']}"


def _fmt_time(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:7.1f}us"
    return f"{seconds * 1e3:7.2f}ms"


def _fmt_speedup(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:5.2f}x"


def machine_summary(metadata: dict[str, Any]) -> str:
    """One line: CPU, threads, sparsegemm's ISA and OpenMP, numpy's BLAS and kernel, torch."""
    config = metadata["sparsegemm"]
    torch_info = metadata.get("torch")
    torch_text = (
        "torch not installed"
        if not torch_info
        else (f"torch {torch_info['version']} (MKL {'yes' if torch_info['mkl'] else 'no'})")
    )
    return (
        f"{metadata['cpu_model']}, {metadata['threads']} threads; sparsegemm "
        f"{config['version']} ISA {config['isa']}, {config['openmp_runtime']}; numpy "
        f"{metadata['numpy']} BLAS {numpy_blas_summary(metadata)}; {torch_text}"
    )


def _row_note(row: dict[str, Any]) -> str:
    notes = []
    if row.get("kept_dense"):
        notes.append(f"kept dense by the planner, ran {row['format']}: not a sparsegemm figure")
    if row.get("flag"):
        notes.append(row["flag"])
    if not row.get("steady", True):
        notes.append("unsteady")
    if row.get("suspect"):
        notes.append(f"SUSPECT: {row['suspect']}")
    return "  (" + "; ".join(notes) + ")" if notes else ""


def terminal_table(rows: Sequence[dict[str, Any]]) -> str:
    """One block per shape/pattern/batch: each contender's time, speedups and GFLOP/s.

    Speedups are against the baseline (torch F.linear, or the faster dense at
    batch 1), against the fastest dense library, and against sparsegemm's own
    kernel on the unpruned weight (same format). Rows that did not run are
    listed after the blocks.
    """
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok":
            groups[point_key(row)].append(row)
    lines = []
    header = (
        f"{'sparsity':>8} {'contender':<12} {'format':<8} {'time':>9} {'[q1..q3 spread]':>17} "
        f"{'vs base':>8} {'vs best':>8} {'vs own0%':>8} {'vs alt':>8} {'useful':>8} {'dense':>8}"
    )
    for (m, k, pattern, batch), group in groups.items():
        baseline = baselines_label(group)
        best = "/".join(sorted({r["best_dense"] for r in group if r.get("best_dense")})) or "-"
        cache = "/".join(sorted({r.get("cache", "warm") for r in group}))
        lines.append(
            f"\n{m}x{k}  batch {batch}  {pattern}  {cache}  (vs base = vs {baseline}; "
            f"vs best = vs the fastest dense, {best}; vs own0% = vs sparsegemm's kernel on the "
            f"unpruned weight, same format; vs alt = vs the fastest int8/bf16 dense alternative; "
            f"GFLOP/s: useful = 2*nnz*N/t, dense = 2*M*K*N/t of the baseline)"
        )
        lines.append(header)
        for row in sorted(
            group, key=lambda r: (r["sparsity"], r["kind"] != "dense", r["contender"])
        ):
            spread = f"{_fmt_time(row['time_q1_s']).strip()}..{_fmt_time(row['time_q3_s']).strip()}"
            lines.append(
                f"{row['sparsity']:8.2f} {row['contender']:<12} {row.get('format') or '-':<8} "
                f"{_fmt_time(row['time_median_s']):>9} "
                f"{spread:>17} {_fmt_speedup(row['speedup']):>8} "
                f"{_fmt_speedup(row['speedup_vs_best_dense']):>8} "
                f"{_fmt_speedup(row.get('speedup_vs_own_dense')):>8} "
                f"{_fmt_speedup(row.get('speedup_vs_alternative')):>8} {row['useful_gflops']:8.1f} "
                f"{row['baseline_gflops']:8.1f}{_row_note(row)}"
            )
    not_run = not_run_lines(rows)
    if not_run:
        lines += ["", "Not measured:", *not_run]
    return "\n".join(lines)


def not_run_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every row whose status is not ok: wrong and failed ones one by one, skips grouped."""
    lines = []
    skipped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok":
            continue
        if row["status"] == "skipped":
            skipped[(row["contender"], row["detail"])].append(row)
            continue
        lines.append(
            f"  {row['status'].upper()}: {row['contender']} at {_shape(row)} batch {row['batch']} "
            f"sparsity {row['sparsity']:g} {row['pattern']}: {row['detail']}"
        )
    for (contender, detail), group in skipped.items():
        lines.append(f"  skipped: {contender} at {len(group)} points: {detail}")
    return lines


def wrong_sparsegemm_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """sparsegemm rows whose output check failed or that raised: the run must fail."""
    return [r for r in rows if r["is_sparsegemm"] and r["status"] in ("wrong", "error")]


def break_even_lines(table: Sequence[dict[str, Any]]) -> str:
    """Terminal summary: break-even sparsity of each sparse contender per shape and batch.

    ``*`` marks sparsegemm's headline contender (the planner's choice when it ran).
    """
    lines = [
        (
            f"{'shape':>10} {'pattern':<13} {'batch':>5} {'contender':<13} {'format':<14} "
            f"{'break-even':>10} {'@90% vs base':>12} {'vs best':>8} {'vs own0%':>8} "
            f"{'vs alt':>8}"
        )
    ]
    for entry in table:
        name = entry["contender"] + ("*" if entry["headline"] else "")
        lines.append(
            f"{_shape(entry):>10} {entry['pattern']:<13} "
            f"{entry['batch']:>5} {name:<13} {_format_at_90(entry):<14} "
            f"{format_break_even(entry['break_even_sparsity']):>10} "
            f"{_fmt_speedup(entry['speedup_at_90']):>12} "
            f"{_fmt_speedup(entry['speedup_vs_best_dense_at_90']):>8} "
            f"{_fmt_speedup(entry['speedup_vs_own_dense_at_90']):>8} "
            f"{_fmt_speedup(entry.get('speedup_vs_alternative_at_90')):>8}"
            + (f"  ({entry['flag_at_90']})" if entry["flag_at_90"] else "")
            + (f"  (left out as suspect: {entry['excluded']})" if entry["excluded"] else "")
        )
    return "\n".join(lines)


def _format_at_90(entry: dict[str, Any]) -> str:
    if entry["format_at_90"] is None:
        return "-"
    return ("kept " if entry["kept_dense_at_90"] else "") + entry["format_at_90"]


def markdown_report(
    metadata: dict[str, Any],
    table: Sequence[dict[str, Any]],
    notes: Sequence[str],
    plot_file: str | None,
    rows: Sequence[dict[str, Any]] = (),
) -> str:
    """Per shape and batch: where sparsegemm starts to win, and by how much at 90%.

    The sparsegemm figure is the headline contender's (the planner's choice, with
    the format it ran); points the planner kept dense are never counted as wins.
    Rows that did not run (``rows`` with a status other than ok) are listed.
    """
    config = metadata["sparsegemm"]
    torch_version = (metadata.get("torch") or {}).get("version", "not installed")
    cache = metadata.get("last_level_cache") or {}
    lines = [
        "# sparsegemm crossover benchmark",
        "",
        (
            f"- CPU: {metadata['cpu_model']} ({metadata['usable_cpus']} usable CPUs), "
            f"{metadata['date']}"
        ),
        (
            f"- sparsegemm {config['version']}, ISA {config['isa']}, "
            f"OpenMP {config['openmp_runtime']}, {metadata['threads']} threads"
        ),
        (
            f"- numpy {metadata['numpy']} ({numpy_blas_summary(metadata)}), "
            f"scipy {metadata['scipy']}, torch {torch_version}"
        ),
        (
            f"- last-level cache {cache.get('bytes', 0) / 2**20:.0f} MiB ({cache.get('source')}); "
            "cold points rotate through weight copies holding twice that"
        ),
        f"- command: `{metadata['command']}`",
        "",
        (
            "Break-even sparsity: above it, the sparse weight is faster than dense (interpolated; "
            "'always' = faster across the grid, 'never' = slower at its highest sparsity). "
            "Batch 1 is compared with the faster of numpy and torch dense, other batches with "
            "torch `F.linear` ('vs base') and with the fastest dense library ('vs best'). "
            "'vs own 0%' is the gain over sparsegemm's own kernel on the unpruned weight, in the "
            "same format: the part of the speedup that sparsity itself brings. 'vs int8/bf16' "
            "compares with the faster of the alternatives a user could pick instead of pruning, "
            "torch `quantize_dynamic` (int8 dense) and `F.linear` in bfloat16, whose own "
            "speedups over the baseline are the 'alternatives' column. The sparsegemm "
            "figure is one contender fixed in advance (the planner's choice, from its own "
            "measurement, with the format it ran); where the planner kept the weight dense "
            "there is no sparsegemm figure."
        ),
        "",
    ]
    if plot_file:
        lines += [f"![crossover plot]({plot_file})", ""]
    lines += [
        (
            "| shape | pattern | batch | cache | vs | sparsegemm (format at 90%) | break-even "
            "| at 90% vs base | vs best | vs own 0% | vs int8/bf16 | alternatives at 90% vs base "
            "| best peer at 90% | flags |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    alternatives = alternatives_at_90(rows)
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for entry in table:
        groups[point_key(entry)].append(entry)
    for (m, k, pattern, batch), entries in groups.items():
        ours = next((e for e in entries if e["headline"]), None)
        peers = [
            e
            for e in entries
            if not e["contender"].startswith("sgemm") and e["speedup_at_90"] is not None
        ]
        best_peer = max(peers, key=lambda e: e["speedup_at_90"], default=None)
        peer_text = (
            "-"
            if best_peer is None
            else f"{best_peer['speedup_at_90']:.2f}x ({best_peer['contender']})"
        )
        baseline = "/".join(sorted({part for e in entries for part in e["baseline"].split("/")}))
        cache = "/".join(sorted({part for e in entries for part in e["cache"].split("/")}))
        alternative_text = (
            ", ".join(
                f"{name} {value:.2f}x"
                for name, value in sorted(alternatives.get((m, k, pattern, batch), {}).items())
            )
            or "-"
        )
        if ours is None:
            cells = ["-"] * 6
            flags = ""
        else:
            cells = [
                f"{ours['contender']} ({_format_at_90(ours)})",
                format_break_even(ours["break_even_sparsity"]),
                _md_speedup(ours["speedup_at_90"]),
                _md_speedup(ours["speedup_vs_best_dense_at_90"]),
                _md_speedup(ours["speedup_vs_own_dense_at_90"]),
                _md_alternative(ours),
            ]
            flags = "; ".join(
                part
                for part in (
                    ours["flag_at_90"],
                    f"left out as suspect: {ours['excluded']}" if ours["excluded"] else "",
                )
                if part
            )
        lines.append(
            f"| {m}x{k} | {pattern} | {batch} | {cache} | {baseline} | "
            + " | ".join(cells)
            + f" | {alternative_text} | {peer_text} | {flags} |"
        )
    not_run = not_run_lines(rows)
    if not_run:
        lines += ["", "Not measured (status other than ok):", ""]
        lines += [f"- {line.strip()}" for line in not_run]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _md_alternative(entry: dict[str, Any]) -> str:
    value = entry.get("speedup_vs_alternative_at_90")
    return "-" if value is None else f"{value:.2f}x ({entry['alternative_at_90']})"


def _md_speedup(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
