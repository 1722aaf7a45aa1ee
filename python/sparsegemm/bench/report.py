"""Human-readable output: the terminal table and the markdown report."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .analysis import BEST_SPARSEGEMM, baselines_label, format_break_even
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


def terminal_table(rows: Sequence[dict[str, Any]]) -> str:
    """One block per shape/pattern/batch: each contender's time, speedup and GFLOP/s."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok":
            groups[(row["out_features"], row["in_features"], row["pattern"], row["batch"])].append(
                row
            )
    lines = []
    header = (
        f"{'sparsity':>8} {'contender':<12} {'time':>9} {'[q1..q3 spread]':>17} "
        f"{'speedup':>8} {'vs best':>8} {'useful':>8} {'dense':>8}"
    )
    for (m, k, pattern, batch), group in groups.items():
        baseline = baselines_label(group)
        lines.append(
            f"\n{m}x{k}  batch {batch}  {pattern}  (speedup vs {baseline}; "
            f"'vs best' = vs the fastest dense; GFLOP/s: useful = 2*nnz*N/t, "
            f"dense = 2*M*K*N/t of the baseline)"
        )
        lines.append(header)
        for row in sorted(
            group, key=lambda r: (r["sparsity"], r["kind"] != "dense", r["contender"])
        ):
            spread = f"{_fmt_time(row['time_q1_s']).strip()}..{_fmt_time(row['time_q3_s']).strip()}"
            flag = "" if row.get("steady", True) else "  (unsteady)"
            lines.append(
                f"{row['sparsity']:8.2f} {row['contender']:<12} "
                f"{_fmt_time(row['time_median_s']):>9} "
                f"{spread:>17} {_fmt_speedup(row['speedup']):>8} "
                f"{_fmt_speedup(row['speedup_vs_best_dense']):>8} {row['useful_gflops']:8.1f} "
                f"{row['baseline_gflops']:8.1f}{flag}"
            )
    return "\n".join(lines)


def break_even_lines(table: Sequence[dict[str, Any]]) -> str:
    """Terminal summary: break-even sparsity of each sparse contender per shape and batch."""
    lines = [
        (
            f"{'shape':>10} {'pattern':<13} {'batch':>5} {'contender':<16} "
            f"{'break-even':>10} {'@90%':>7}"
        )
    ]
    for entry in table:
        lines.append(
            f"{_shape(entry):>10} {entry['pattern']:<13} "
            f"{entry['batch']:>5} {entry['contender']:<16} "
            f"{format_break_even(entry['break_even_sparsity']):>10} "
            f"{_fmt_speedup(entry['speedup_at_90']):>7}"
        )
    return "\n".join(lines)


def markdown_report(
    metadata: dict[str, Any],
    table: Sequence[dict[str, Any]],
    notes: Sequence[str],
    plot_file: str | None,
) -> str:
    """Per shape and batch: where sparsegemm starts to win, and by how much at 90%."""
    config = metadata["sparsegemm"]
    torch_version = (metadata.get("torch") or {}).get("version", "not installed")
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
        f"- command: `{metadata['command']}`",
        "",
        (
            "Break-even sparsity: above it, the sparse weight is faster than dense (interpolated; "
            "'always' = faster across the grid, 'never' = slower at its highest sparsity). "
            "Batch 1 is compared with the faster of numpy and torch dense, other batches with "
            "torch `F.linear`."
        ),
        "",
    ]
    if plot_file:
        lines += [f"![crossover plot]({plot_file})", ""]
    lines += [
        (
            "| shape | pattern | batch | vs | sparsegemm break-even | speedup at 90% (format) "
            "| best peer at 90% |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for entry in table:
        groups[
            (entry["out_features"], entry["in_features"], entry["pattern"], entry["batch"])
        ].append(entry)
    for (m, k, pattern, batch), entries in groups.items():
        ours = next((e for e in entries if e["contender"] == BEST_SPARSEGEMM), None)
        peers = [
            e
            for e in entries
            if not e["contender"].startswith("sgemm")
            and e["contender"] != BEST_SPARSEGEMM
            and e["speedup_at_90"] is not None
        ]
        best_peer = max(peers, key=lambda e: e["speedup_at_90"], default=None)
        ours_text = "-" if ours is None else format_break_even(ours["break_even_sparsity"])
        at_90 = (
            "-"
            if ours is None or ours["speedup_at_90"] is None
            else f"{ours['speedup_at_90']:.2f}x ({ours['format_at_90']})"
        )
        peer_text = (
            "-"
            if best_peer is None
            else f"{best_peer['speedup_at_90']:.2f}x ({best_peer['contender']})"
        )
        baseline = "/".join(sorted({part for e in entries for part in e["baseline"].split("/")}))
        lines.append(
            f"| {m}x{k} | {pattern} | {batch} | {baseline} | {ours_text} | {at_90} | {peer_text} |"
        )
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
