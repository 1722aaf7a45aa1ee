"""Break-even interpolation and the break-even table, on synthetic data."""

import math

import pytest

from sparsegemm.bench.analysis import (
    break_even,
    break_even_table,
    headline_rows,
    is_sparsegemm_figure,
)


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


def test_a_kept_dense_point_is_a_loss_without_a_figure():
    # the planner kept 0.5 and 0.7 dense: sparse wins only from 0.8 on
    assert break_even([0.8, 0.9], [1.5, 3.0], kept_dense=[0.5, 0.7]) == 0.8
    # a measured loss above the kept-dense points is interpolated as usual
    assert break_even([0.7, 0.9], [0.5, 1.5], kept_dense=[0.5]) == pytest.approx(0.8)
    assert break_even([], [], kept_dense=[0.5, 0.9]) == "never"


def _row(contender, sparsity, speedup, ours=True, batch=1, **extra):
    return {
        "out_features": 8,
        "in_features": 8,
        "pattern": "unstructured",
        "batch": batch,
        "contender": contender,
        "sparsity": sparsity,
        "speedup": speedup,
        "speedup_vs_best_dense": speedup,
        "speedup_vs_own_dense": 2.0,
        "status": "ok",
        "kind": "sparse",
        "is_sparsegemm": ours,
        "baseline": "numpy_dense",
        "detail": "",
        "format": "",
        "kept_dense": False,
        **extra,
    }


def test_table_has_each_contender_and_quotes_the_planners_choice_not_the_fastest():
    rows = [
        _row("sgemm_csr", 0.5, 0.5, format="csr"),
        _row("sgemm_csr", 0.9, 4.0, format="csr"),
        _row("sgemm_bsr", 0.5, 0.9, format="bsr4x4"),
        _row("sgemm_bsr", 0.9, 3.0, format="bsr4x4"),
        _row("sgemm_auto", 0.5, 0.8, format="bsr4x4"),
        _row("sgemm_auto", 0.9, 2.5, format="bsr4x4"),
        _row("torch_csr", 0.5, 0.1, ours=False),
        _row("torch_csr", 0.9, 0.5, ours=False),
        dict(_row("numpy_dense", 0.5, 1.0), kind="dense"),
    ]
    table = {e["contender"]: e for e in break_even_table(rows)}
    assert set(table) == {"sgemm_csr", "sgemm_bsr", "sgemm_auto", "torch_csr"}
    assert table["torch_csr"]["break_even_sparsity"] == "never"
    assert table["sgemm_csr"]["break_even_sparsity"] == pytest.approx(0.5 + 0.5 / 3.5 * 0.4)
    assert [name for name, e in table.items() if e["headline"]] == ["sgemm_auto"]
    ours = table["sgemm_auto"]
    # the planner's own timing, not the fastest of the three sparsegemm rows (4.0x)
    assert ours["speedup_at_90"] == 2.5 and ours["format_at_90"] == "bsr4x4"
    assert ours["speedup_vs_own_dense_at_90"] == 2.0
    assert ours["break_even_sparsity"] == pytest.approx(0.5 + 0.2 / 1.7 * 0.4)
    assert {r["contender"] for r in headline_rows(rows)} == {"sgemm_auto"}


def test_a_kept_dense_point_never_appears_as_a_sparsegemm_figure():
    # The planner kept the weight dense at 0.5 and 0.9: numpy ran, and happened to be
    # faster than the torch baseline. Neither point may count as a sparsegemm win.
    kept = {"kept_dense": True, "format": "dense (numpy)"}
    rows = [
        _row("sgemm_auto", 0.5, 1.3, **kept),
        _row("sgemm_auto", 0.7, 1.2, format="csr"),
        _row("sgemm_auto", 0.9, 1.3, **kept),
    ]
    assert [is_sparsegemm_figure(r) for r in rows] == [False, True, False]
    assert [r["sparsity"] for r in headline_rows(rows)] == [0.7]
    (entry,) = break_even_table(rows)
    assert entry["break_even_sparsity"] == "never"  # not "always"
    assert entry["speedup_at_90"] is None and entry["kept_dense_at_90"]
    assert entry["format_at_90"] == "dense (numpy)"


def test_suspect_points_are_left_out_of_the_break_even_and_listed():
    rows = [
        _row("sgemm_csr", 0.5, 0.5, format="csr"),
        _row("sgemm_csr", 0.7, 1.4, format="csr", suspect="unsteady dense reference"),
        _row("sgemm_csr", 0.9, 3.0, format="csr"),
    ]
    (entry,) = break_even_table(rows)
    assert entry["excluded"] == [0.7]
    assert entry["break_even_sparsity"] == pytest.approx(0.5 + 0.5 / 2.5 * 0.4)


def test_a_series_against_both_dense_references_names_both():
    rows = [_row("sgemm_csr", 0.5, 0.5), dict(_row("sgemm_csr", 0.9, 2.0), baseline="torch_dense")]
    (entry,) = [e for e in break_even_table(rows) if e["contender"] == "sgemm_csr"]
    assert entry["baseline"] == "numpy_dense/torch_dense"
