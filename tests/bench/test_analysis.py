"""Break-even interpolation and the break-even table, on synthetic data."""

import math

import pytest
from sparsegemm.bench.analysis import BEST_SPARSEGEMM, break_even, break_even_table


def test_interpolates_the_crossing():
    # speedup 0.5 at 0.8 and 1.5 at 0.9: crosses 1 half-way
    assert break_even([0.5, 0.8, 0.9, 0.95], [0.2, 0.5, 1.5, 3.0]) == pytest.approx(0.85)


def test_uses_the_last_crossing_when_the_curve_dips():
    # faster at 0.5, slower at 0.7, faster from 0.8 on: it stays faster only above 0.7..0.8
    value = break_even([0.5, 0.7, 0.8], [1.2, 0.8, 1.6])
    assert value == pytest.approx(0.7 + 0.2 / 0.8 * 0.1)


def test_always_never_and_empty():
    assert break_even([0.5, 0.9], [1.1, 4.0]) == "always"
    assert break_even([0.5, 0.9], [0.1, 0.9]) == "never"
    assert break_even([0.5, 0.9, 0.95], [1.5, 2.0, 0.9]) == "never"
    assert break_even([], []) == "n/a"
    assert break_even([0.5, 0.9], [math.nan, math.nan]) == "n/a"


def test_ignores_unmeasured_points_and_sorts():
    assert break_even([0.9, 0.5, 0.7], [2.0, 0.5, math.nan]) == pytest.approx(0.5 + 0.5 / 1.5 * 0.4)


def _row(contender, sparsity, speedup, ours=True, batch=1):
    return {
        "out_features": 8,
        "in_features": 8,
        "pattern": "unstructured",
        "batch": batch,
        "contender": contender,
        "sparsity": sparsity,
        "speedup": speedup,
        "status": "ok",
        "kind": "sparse",
        "is_sparsegemm": ours,
        "baseline": "numpy_dense",
        "detail": "",
    }


def test_table_has_each_contender_and_the_best_sparsegemm_format():
    rows = [
        _row("sgemm_csr", 0.5, 0.5),
        _row("sgemm_csr", 0.9, 1.5),
        _row("sgemm_bsr", 0.5, 0.9),
        _row("sgemm_bsr", 0.9, 3.0),
        _row("torch_csr", 0.5, 0.1, ours=False),
        _row("torch_csr", 0.9, 0.5, ours=False),
        dict(_row("numpy_dense", 0.5, 1.0), kind="dense"),
    ]
    table = {e["contender"]: e for e in break_even_table(rows)}
    assert set(table) == {"sgemm_csr", "sgemm_bsr", "torch_csr", BEST_SPARSEGEMM}
    assert table["torch_csr"]["break_even_sparsity"] == "never"
    assert table["sgemm_csr"]["break_even_sparsity"] == pytest.approx(0.7)
    best = table[BEST_SPARSEGEMM]
    assert best["speedup_at_90"] == 3.0 and best["format_at_90"] == "sgemm_bsr"
    assert best["break_even_sparsity"] == pytest.approx(0.5 + 0.1 / 2.1 * 0.4)


def test_a_series_against_both_dense_references_names_both():
    rows = [_row("sgemm_csr", 0.5, 0.5), dict(_row("sgemm_csr", 0.9, 2.0), baseline="torch_dense")]
    (entry,) = [e for e in break_even_table(rows) if e["contender"] == "sgemm_csr"]
    assert entry["baseline"] == "numpy_dense/torch_dense"
