"""Merging the rows of --processes runs."""

import pytest

from sparsegemm.bench.processes import merge_e2e_rows, merge_rows


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


def test_the_merged_row_is_the_format_most_processes_ran():
    kept = _row(None, format="dense (torch)", kept_dense=True)
    (row,) = merge_rows([[kept], [_row(2.0, format="csr")], [_row(4.0, format="csr")]])
    assert row["format"] == "csr" and not row.get("kept_dense")
    assert row["speedup"] == 3.0  # the process that kept it dense has no sparse figure
    assert row["process_formats"] == ["dense (torch)", "csr", "csr"]
    assert row["format_processes"] == 2


def test_a_minority_formats_timings_do_not_enter_the_majority_formats_figure():
    # measured: three processes ran bsr4x1 at ~13x, two bsr4x4 at ~7x; the median
    # of all five (10.2x) was neither format's figure
    rows = [[_row(s, format=f, time_median_s=1.0 / s)] for s, f in
            [(6.6, "bsr4x4"), (7.7, "bsr4x4"), (10.2, "bsr4x1"), (14.0, "bsr4x1"),
             (14.9, "bsr4x1")]]
    (row,) = merge_rows(rows)
    assert row["format"] == "bsr4x1" and row["format_processes"] == 3
    assert row["speedup"] == 14.0 and row["time_median_s"] == pytest.approx(1 / 14.0)
    assert row["process_speedups"] == [6.6, 7.7, 10.2, 14.0, 14.9]  # all still shown
    assert row["process_spread"] == pytest.approx(14.9 / 10.2)


def test_where_most_processes_kept_the_weight_dense_the_row_has_no_sparse_figure():
    kept = _row(None, format="dense (torch)", kept_dense=True)
    (row,) = merge_rows([[kept], [dict(kept)], [_row(4.0, format="csr")]])
    assert row["kept_dense"] and row["format"] == "dense (torch)"
    assert row["speedup"] != row["speedup"]  # NaN


def _e2e_row(speedup, status="ok", **extra):
    return {
        "model": "MLP",
        "input_shape": "64x1024",
        "sparsity": 0.9,
        "pattern": "unstructured",
        "format": "default",
        "status": status,
        "detail": "",
        "dense_time_s": 1.0,
        "sparse_time_s": 1.0 / speedup if speedup else None,
        "speedup": speedup,
        "max_rel_error": 1e-6,
        "steady": True,
        **extra,
    }


def test_end_to_end_rows_merge_to_medians_with_every_process_figure():
    rows = merge_e2e_rows([
        [_e2e_row(4.0, max_rel_error=1e-6), _e2e_row(2.0, format="csr")],
        [_e2e_row(5.0, max_rel_error=3e-6, vs_deepsparse=0.8), _e2e_row(2.2, format="csr")],
        [_e2e_row(9.0, steady=False), _e2e_row(2.1, format="csr")],
    ])
    default, csr = rows
    assert default["speedup"] == 5.0 and default["processes"] == 3
    assert default["sparse_time_s"] == pytest.approx(1 / 5.0)
    assert default["process_speedups"] == [4.0, 5.0, 9.0]
    assert default["process_spread"] == pytest.approx(9.0 / 4.0)
    assert default["max_rel_error"] == 3e-6  # the worst process
    assert not default["steady"]
    assert default["vs_deepsparse"] == 0.8  # only one process ran DeepSparse
    assert csr["format"] == "csr" and csr["speedup"] == 2.1 and csr["steady"]


def test_an_end_to_end_mismatch_in_one_process_is_a_mismatch():
    (row,) = merge_e2e_rows([[_e2e_row(4.0)], [_e2e_row(None, status="wrong", detail="off")]])
    assert row["status"] == "wrong" and row["detail"] == "off"
