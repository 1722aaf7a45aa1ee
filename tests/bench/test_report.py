"""The terminal table and the markdown report, on synthetic rows."""

import math

from sparsegemm.bench.analysis import break_even_table
from sparsegemm.bench.report import markdown_report, terminal_table


def _row(contender, kind="sparse", ours=True, **extra):
    time = extra.pop("time", 1e-3)
    return {
        "out_features": 64,
        "in_features": 128,
        "pattern": "unstructured",
        "batch": 16,
        "sparsity": 0.9,
        "actual_sparsity": 0.9,
        "label": "",
        "contender": contender,
        "kind": kind,
        "is_sparsegemm": ours,
        "status": "ok",
        "detail": "",
        "format": "",
        "kept_dense": False,
        "cache": "cold",
        "time_median_s": time,
        "time_q1_s": time,
        "time_q3_s": time,
        "speedup": 2.0,
        "speedup_vs_best_dense": 1.5,
        "speedup_vs_own_dense": math.nan,
        "useful_gflops": 1.0,
        "baseline_gflops": 1.0,
        "baseline": "torch_dense",
        "best_dense": "numpy_dense",
        "steady": True,
        **extra,
    }


ROWS = [
    _row("torch_dense", kind="dense", ours=False, speedup=1.0),
    _row("numpy_dense", kind="dense", ours=False),
    _row(
        "sgemm_auto",
        format="bsr4x4",
        speedup=12.0,
        speedup_vs_best_dense=11.0,
        speedup_vs_own_dense=3.0,
        alternative="torch_int8_dyn",
        speedup_vs_alternative=4.0,
        flag="above 1/(1-s) = 10.0x cold: dense runs below its best",
    ),
    _row("torch_int8_dyn", kind="alternative", ours=False, speedup=3.0),
    _row("sgemm_csr", format="csr", speedup=3.0, speedup_vs_own_dense=2.5),
    _row("sgemm_bsr", status="wrong", detail="max error 0.5 of max |y| exceeds 0.001"),
    _row("torch_bsr", ours=False, status="skipped", detail="needs a block pattern"),
]


def test_terminal_table_names_both_references_flags_and_what_did_not_run():
    text = terminal_table(ROWS)
    assert (
        "vs base = vs torch_dense" in text and "vs best = vs the fastest dense, numpy_dense" in text
    )
    auto = next(line for line in text.splitlines() if " sgemm_auto " in line)
    assert "bsr4x4" in auto and "12.00x" in auto and "11.00x" in auto and "3.00x" in auto
    assert "4.00x" in auto  # vs the int8/bf16 alternative
    assert "vs alt = vs the fastest int8/bf16 dense alternative" in text
    assert "above 1/(1-s) = 10.0x" in auto
    assert "WRONG: sgemm_bsr at 64x128 batch 16 sparsity 0.9" in text
    assert "skipped: torch_bsr at 1 points: needs a block pattern" in text


def test_terminal_table_labels_a_kept_dense_row_and_gives_it_no_speedup():
    kept = _row(
        "sgemm_auto",
        format="dense (numpy)",
        kept_dense=True,
        speedup=math.nan,
        speedup_vs_best_dense=math.nan,
    )
    line = next(row for row in terminal_table([kept]).splitlines() if " sgemm_auto " in row)
    assert "kept dense by the planner" in line and "not a sparsegemm figure" in line
    figures, _ = line.split("  (", 1)
    assert figures.split()[-6:-2] == ["-"] * 4  # vs base, vs best, vs own 0%, vs alternative


def test_markdown_report_quotes_the_planners_format_and_lists_rows_that_did_not_run():
    metadata = {
        "cpu_model": "CPU",
        "usable_cpus": 2,
        "date": "2026-11-30",
        "threads": 2,
        "numpy": "2",
        "scipy": "1",
        "command": "sparsegemm bench",
        "sparsegemm": {"version": "0", "isa": "avx2", "openmp_runtime": "gomp", "numpy_blas": []},
        "last_level_cache": {"bytes": 32 * 2**20, "source": "sysfs L3"},
    }
    text = markdown_report(metadata, break_even_table(ROWS), [], None, ROWS)
    row = next(line for line in text.splitlines() if line.startswith("| 64x128"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[3:12] == [
        "cold",
        "torch_dense",
        "sgemm_auto (bsr4x4)",
        "always",
        "12.00x",
        "11.00x",
        "3.00x",
        "4.00x (torch_int8_dyn)",
        "torch_int8_dyn 3.00x",
    ]
    assert "above 1/(1-s)" in cells[13]
    assert "- WRONG: sgemm_bsr" in text and "32 MiB (sysfs L3)" in text
