"""Merging the rows of --processes runs."""

import pytest

from sparsegemm.bench.processes import merge_rows


def _row(speedup, status="ok", **extra):
    return {
        "out_features": 8,
        "in_features": 8,
        "batch": 1,
        "sparsity": 0.9,
        "pattern": "unstructured",
        "label": "",
        "dtype": "float32",
        "threads": 2,
        "contender": "sgemm_csr",
        "status": status,
        "speedup": speedup,
        "time_median_s": 1.0 / speedup if speedup else None,
        "steady": True,
        **extra,
    }


def test_ratios_are_medians_of_the_processes_with_their_spread():
    (row,) = merge_rows([[_row(2.0)], [_row(3.0)], [_row(10.0, steady=False)]])
    assert row["speedup"] == 3.0 and row["processes"] == 3
    assert row["process_speedups"] == [2.0, 3.0, 10.0]
    assert row["process_spread"] == pytest.approx(5.0)
    assert not row["steady"]  # unsteady in one process is unsteady


def test_a_wrong_answer_in_one_process_is_a_wrong_answer():
    (row,) = merge_rows([[_row(2.0)], [_row(None, status="wrong", detail="max error")]])
    assert row["status"] == "wrong" and row["detail"] == "max error"
