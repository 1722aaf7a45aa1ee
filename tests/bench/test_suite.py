"""One point through the contenders: checks, skips, baselines."""

import importlib.util
import math

import numpy as np
import pytest

import sparsegemm
from sparsegemm.bench import contenders as registry
from sparsegemm.bench.analysis import break_even_table, is_sparsegemm_figure
from sparsegemm.bench.cli import choose_contenders
from sparsegemm.bench.harness import HarnessSettings
from sparsegemm.bench.suite import (
    MAX_COLD_COPIES,
    SuiteSpec,
    above_work_ratio_reason,
    cold_copies,
    run_point,
    run_suite,
    suspect_points,
)
from sparsegemm.bench.workloads import Pattern, Point, WeightCache

FAST = HarnessSettings(rounds=2, target_block_s=0.0002, max_calls=2, sleep_s=0.0, max_remeasure=0)


def _spec(names, quick=False, cache="warm"):
    return SuiteSpec(
        points=[],
        contenders=names,
        dtype=np.dtype(np.float32),
        threads=1,
        harness=FAST,
        quick=quick,
        cache=cache,
    )


def _operands(point):
    cache = WeightCache(np.float32)
    return cache.pruned(point), cache.inputs(point.batch, point.in_features)


@pytest.fixture
def fake_contenders(monkeypatch):
    """A wrong contender and one that declines every problem, registered for one test."""
    monkeypatch.setitem(
        registry.REGISTRY,
        "fake_wrong",
        registry.Contender(
            "fake_wrong",
            "returns twice the answer",
            "sparse",
            lambda p: lambda: 2.0 * (p.x @ p.weight.T),
        ),
    )

    def decline(problem):
        raise registry.Unsupported("not this one")

    monkeypatch.setitem(
        registry.REGISTRY,
        "fake_declines",
        registry.Contender("fake_declines", "declines", "sparse", decline),
    )

    def broken(problem):
        raise RuntimeError("library bug")

    monkeypatch.setitem(
        registry.REGISTRY,
        "fake_broken",
        registry.Contender("fake_broken", "raises", "sparse", broken),
    )


def test_wrong_declining_and_broken_contenders_are_reported_not_timed(fake_contenders):
    point = Point(32, 64, 4, 0.8)
    rows = {
        r["contender"]: r
        for r in run_point(
            point,
            *_operands(point),
            _spec(["numpy_dense", "sgemm_csr", "fake_wrong", "fake_declines", "fake_broken"]),
        )
    }
    assert rows["fake_wrong"]["status"] == "wrong" and "time_median_s" not in rows["fake_wrong"]
    assert rows["fake_declines"]["status"] == "skipped"
    assert rows["fake_declines"]["detail"] == "not this one"
    assert (
        rows["fake_broken"]["status"] == "error" and "library bug" in rows["fake_broken"]["detail"]
    )
    ok = rows["sgemm_csr"]
    assert ok["status"] == "ok" and ok["max_rel_error"] < 1e-5
    assert ok["baseline"] == "numpy_dense"
    assert ok["speedup"] == pytest.approx(ok["baseline_time_s"] / ok["time_median_s"])
    assert ok["useful_gflops"] == pytest.approx(
        2 * np.count_nonzero(_operands(point)[0]) * 4 / ok["time_median_s"] / 1e9
    )
    assert ok["actual_sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_quick_suite_skips_slow_contenders_at_large_batches():
    point = Point(16, 16, 32, 0.5)
    rows = {
        r["contender"]: r
        for r in run_point(
            point, *_operands(point), _spec(["numpy_dense", "scipy_csr"], quick=True)
        )
    }
    assert rows["scipy_csr"]["status"] == "skipped" and "quick" in rows["scipy_csr"]["detail"]


@pytest.mark.torch
def test_baseline_is_the_faster_dense_at_batch_1_and_torch_otherwise():
    pytest.importorskip("torch")
    names = ["numpy_dense", "torch_dense", "torch_csr", "sgemm_csr"]
    rows = run_suite(
        SuiteSpec(
            points=[Point(32, 64, 1, 0.9), Point(32, 64, 8, 0.9)],
            contenders=names,
            dtype=np.dtype(np.float32),
            threads=1,
            harness=FAST,
        ),
        progress=False,
    )
    for row in rows:
        assert row["status"] == "ok", row
    batch1 = [r for r in rows if r["batch"] == 1]
    fastest = min((r for r in batch1 if r["kind"] == "dense"), key=lambda r: r["time_median_s"])
    assert {r["baseline"] for r in batch1} == {fastest["contender"]}
    assert {r["baseline"] for r in rows if r["batch"] == 8} == {"torch_dense"}


@pytest.mark.torch
def test_torch_bsr_takes_only_square_blocks():
    pytest.importorskip("torch")
    for blocksize, status in (((4, 4), "ok"), ((4, 1), "skipped")):
        point = Point(32, 64, 4, 0.5, Pattern(blocksize))
        rows = {
            r["contender"]: r
            for r in run_point(point, *_operands(point), _spec(["torch_dense", "torch_bsr"]))
        }
        assert rows["torch_bsr"]["status"] == status, rows["torch_bsr"]


def test_unknown_contender_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown contenders"):
        run_suite(_spec(["nope"]), progress=False)


def test_quick_suite_keeps_block_patterns_to_the_fast_contenders():
    point = Point(16, 16, 4, 0.5, Pattern((4, 4)))
    rows = {
        r["contender"]: r
        for r in run_point(
            point, *_operands(point), _spec(["numpy_dense", "scipy_csr", "sgemm_csr"], quick=True)
        )
    }
    assert (
        rows["scipy_csr"]["status"] == "skipped" and "unstructured" in rows["scipy_csr"]["detail"]
    )
    assert rows["sgemm_csr"]["status"] == "ok"


def test_conversions_are_reused_across_batches():
    cache: dict = {}
    point = Point(16, 32, 1, 0.5)
    weight, x = _operands(point)
    run_point(point, weight, x, _spec(["numpy_dense", "sgemm_csr"]), cache)
    first = cache["sgemm:csr"]
    run_point(
        Point(16, 32, 4, 0.5),
        weight,
        np.ones((4, 32), np.float32),
        _spec(["numpy_dense", "sgemm_csr"]),
        cache,
    )
    assert cache["sgemm:csr"] is first


def test_block_formats_and_planner_contenders_run_with_their_checks():
    assert {"sgemm_bsr", "sgemm_auto"} <= set(registry.REGISTRY)
    names = ["numpy_dense", "sgemm_bsr", "sgemm_auto"]
    unstructured = Point(16, 32, 2, 0.75)
    rows = {
        r["contender"]: r for r in run_point(unstructured, *_operands(unstructured), _spec(names))
    }
    assert rows["sgemm_bsr"]["status"] == "skipped"
    # The planner's choice is checked against dense like any contender, and named.
    auto = rows["sgemm_auto"]
    assert auto["status"] == "ok", auto["detail"]
    assert auto["detail"].split(" ")[0] in ("csr", "dense", "bsr4x1", "bsr8x1", "bsr16x1", "bsr4x4")
    blocked = Point(16, 32, 2, 0.75, Pattern((4, 4)))
    rows = {r["contender"]: r for r in run_point(blocked, *_operands(blocked), _spec(names))}
    assert rows["sgemm_bsr"]["status"] == "ok" and rows["sgemm_bsr"]["is_sparsegemm"]


def test_progress_falls_back_to_a_stderr_line_without_tqdm(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)
    spec = _spec(["numpy_dense"])
    spec.points = [Point(8, 8, 1, 0.5), Point(8, 8, 2, 0.5)]
    rows = run_suite(spec, progress=True)
    assert len(rows) == 2
    err = capsys.readouterr().err
    assert "[1/2]" in err and "[2/2]" in err and "8x8 b=2" in err


def _dense_plan(weight, batch, **kwargs):
    """A planner decision that keeps the weight dense, numpy fastest."""
    return sparsegemm.Plan("dense", None, {"dense_numpy": 1.0, "csr": 2.0}, 1.0, 1.0)


def test_a_point_the_planner_kept_dense_is_labelled_and_has_no_sparse_speedup(monkeypatch):
    monkeypatch.setattr(sparsegemm, "plan", _dense_plan)
    point = Point(16, 32, 4, 0.9)
    rows = {
        r["contender"]: r
        for r in run_point(point, *_operands(point), _spec(["numpy_dense", "sgemm_auto"]))
    }
    auto = rows["sgemm_auto"]
    assert auto["status"] == "ok" and auto["kept_dense"] and auto["format"] == "dense (numpy)"
    assert math.isnan(auto["speedup"]) and math.isnan(auto["speedup_vs_best_dense"])
    assert not is_sparsegemm_figure(auto)
    assert break_even_table([auto])[0]["break_even_sparsity"] == "never"


def test_the_planner_decides_once_per_batch_and_never_from_a_cache(monkeypatch):
    decisions = []

    def recording_plan(weight, batch, **kwargs):
        decisions.append((batch, kwargs.get("cache")))
        return _dense_plan(weight, batch)

    monkeypatch.setattr(sparsegemm, "plan", recording_plan)
    point = Point(16, 32, 2, 0.9)
    run_point(point, *_operands(point), _spec(["numpy_dense", "sgemm_auto"], cache="cold"))
    assert decisions == [(2, False)]  # one decision for all cold copies, never cached


def test_each_sparsegemm_format_is_compared_with_its_own_kernel_at_zero_sparsity():
    point = Point(16, 32, 4, 0.75, Pattern((4, 4)))
    cache = WeightCache(np.float32)
    weight, x = cache.pruned(point), cache.inputs(point.batch, point.in_features)
    unpruned_cache: dict = {}
    rows = {
        r["contender"]: r
        for r in run_point(
            point,
            weight,
            x,
            _spec(["numpy_dense", "sgemm_csr", "sgemm_bsr"]),
            unpruned=cache.dense(16, 32),
            unpruned_cache=unpruned_cache,
        )
    }
    for name, format in (("sgemm_csr", "csr"), ("sgemm_bsr", "bsr4x4")):
        row = rows[name]
        assert row["format"] == format
        assert row["speedup_vs_own_dense"] == pytest.approx(
            row["own_dense_time_s"] / row["time_median_s"]
        )
        operand = unpruned_cache[f"sgemm:{format}"]
        assert operand.nnz == 16 * 32  # the unpruned weight, stored in the same format
    assert math.isnan(rows["numpy_dense"]["speedup_vs_own_dense"])


def test_cold_points_rotate_through_copies_that_exceed_the_cache():
    point = Point(16, 32, 1, 0.5)
    weight, x = _operands(point)
    nnz_bytes = np.count_nonzero(weight) * 4
    spec = _spec(["numpy_dense", "sgemm_csr", "scipy_csr"], cache="auto")
    spec.llc_bytes = 10 * nnz_bytes
    weight_cache: dict = {}
    rows = {r["contender"]: r for r in run_point(point, weight, x, spec, weight_cache)}
    assert rows["sgemm_csr"]["cache"] == "cold"
    assert rows["sgemm_csr"]["cold_copies"] == 2 * 10  # twice the cache over the stored values
    assert rows["numpy_dense"]["cold_copies"] == math.ceil(20 * nnz_bytes / weight.nbytes)
    copies = [weight_cache["sgemm:csr"]] + [
        weight_cache[f"cold copy {i}"]["sgemm:csr"] for i in range(1, 20)
    ]
    addresses = {matrix.data.ctypes.data for matrix in copies}
    assert len(addresses) == 20  # each copy in its own memory
    for matrix in copies:
        np.testing.assert_array_equal(matrix.to_dense(), weight)
    assert weight_cache["cold copy 1"]["scipy_csr"] is not weight_cache["scipy_csr"]
    # batch 64 is warm by default: one copy
    big = Point(16, 32, 64, 0.5)
    row = {r["contender"]: r for r in run_point(big, *_operands(big), spec)}["sgemm_csr"]
    assert row["cache"] == "warm" and row["cold_copies"] == 1


def test_cold_copies_count():
    assert cold_copies(footprint_bytes=10, llc_bytes=100) == 20
    assert cold_copies(footprint_bytes=1000, llc_bytes=100) == 2  # never one copy
    assert cold_copies(footprint_bytes=1, llc_bytes=10**9) == MAX_COLD_COPIES
    assert cold_copies(footprint_bytes=0, llc_bytes=100) == 1


def test_a_rotation_capped_below_the_cache_is_labelled_partly_cold():
    point = Point(16, 32, 1, 0.5)
    spec = _spec(["numpy_dense", "sgemm_csr"], cache="cold")
    spec.llc_bytes = 10**9  # no number of 16x32 copies reaches it
    rows = {r["contender"]: r for r in run_point(point, *_operands(point), spec)}
    assert rows["sgemm_csr"]["cache"] == "partly cold"
    assert rows["sgemm_csr"]["cold_copies"] == MAX_COLD_COPIES


@pytest.mark.parametrize(
    "cache, speedup, vs_best, reason",
    [
        ("warm", 12.0, 12.0, "warm run"),
        ("partly cold", 12.0, 12.0, "partly cold run"),
        ("cold", 12.0, 5.0, "only against torch_dense"),
        ("cold", 12.0, 11.0, "dense runs below its best"),
        ("cold", 9.0, 9.0, ""),
    ],
)
def test_speedups_above_the_work_ratio_are_flagged_with_the_reason(cache, speedup, vs_best, reason):
    row = {
        "actual_sparsity": 0.9,
        "cache": cache,
        "speedup": speedup,
        "speedup_vs_best_dense": vs_best,
        "baseline": "torch_dense",
    }
    flag = above_work_ratio_reason(row)
    assert (reason in flag) and (bool(flag) == bool(reason))


def _series_row(sparsity, speedup, **extra):
    return {
        "out_features": 16,
        "in_features": 32,
        "batch": 1,
        "sparsity": sparsity,
        "pattern": "unstructured",
        "label": "",
        "contender": "sgemm_csr",
        "status": "ok",
        "kind": "sparse",
        "is_sparsegemm": True,
        "kept_dense": False,
        "speedup": speedup,
        "steady": True,
        **extra,
    }


def test_unsteady_and_out_of_line_points_are_suspect():
    rows = [
        _series_row(0.5, 1.0),
        _series_row(0.7, 3.0),
        _series_row(0.8, 2.0),  # falls by 1.5x as sparsity rises: 0.7 and 0.8 are suspect
        _series_row(0.9, 2.2, steady=False),
        _series_row(0.95, 2.3, process_spread=1.6),
    ]
    suspects = {point.sparsity: reason for point, reason in suspect_points(rows).items()}
    assert set(suspects) == {0.7, 0.8, 0.9, 0.95}
    assert "falls from 3.00x" in suspects[0.7] and "unsteady" in suspects[0.9]
    assert "processes disagree" in suspects[0.95]


def test_suspect_points_are_measured_again(monkeypatch):
    from sparsegemm.bench import suite

    calls = []

    def fake_run_point(point, *args, **kwargs):
        calls.append(point)
        # the first measurement of the first point is unsteady, the rest calm and monotone
        return [_series_row(point.sparsity, 10 * point.sparsity, steady=len(calls) > 1)]

    monkeypatch.setattr(suite, "run_point", fake_run_point)
    spec = _spec(["numpy_dense", "sgemm_csr"])
    spec.points = [Point(16, 32, 1, 0.5), Point(16, 32, 1, 0.9)]
    rows = run_suite(spec, progress=False)
    assert calls == [spec.points[0], spec.points[1], spec.points[0]]
    assert [r["sparsity"] for r in rows] == [0.5, 0.9]  # grid order kept
    assert rows[0]["remeasured"] == 1 and rows[0]["steady"] and not rows[0]["suspect"]


def test_the_planners_choice_says_when_it_came_from_a_cache():
    times = {"dense_numpy": 2.0, "csr": 1.0}
    fresh = sparsegemm.Plan("csr", object(), times, 2.0, 2.0)
    cached = sparsegemm.Plan("dense", None, times, 2.0, 1.0, cached=True)
    assert registry.describe_plan(fresh) == "csr (2.00x)"
    assert registry.describe_plan(cached) == "dense (numpy, cached)"


def test_int8_and_bf16_alternatives_are_checked_loosely_and_compared_with_sparsegemm(
    monkeypatch,
):
    pytest.importorskip("torch")
    point = Point(256, 512, 4, 0.9, Pattern())
    names = ["torch_dense", "torch_int8_dyn", "torch_bf16", "sgemm_csr"]
    rows = {r["contender"]: r for r in run_point(point, *_operands(point), _spec(names))}
    for name in ("torch_int8_dyn", "torch_bf16"):
        row = rows[name]
        assert row["status"] == "ok" and row["kind"] == "alternative"
        # Quantized results differ from the float product, yet by little.
        assert 0 < row["max_rel_error"] <= registry.REGISTRY[name].approximate_tolerance
        assert not is_sparsegemm_figure(row)
    ours = rows["sgemm_csr"]
    fastest = min(("torch_int8_dyn", "torch_bf16"), key=lambda n: rows[n]["time_median_s"])
    assert ours["alternative"] == fastest
    assert ours["speedup_vs_alternative"] == pytest.approx(
        rows[fastest]["time_median_s"] / ours["time_median_s"]
    )
    assert rows["torch_dense"]["baseline"] == "torch_dense"  # never an alternative

    # An alternative far off the float product is reported wrong, not timed.
    broken = registry.Contender(
        "fake_int8",
        "int8 gone wrong",
        "alternative",
        lambda p: lambda: 1.2 * (p.x @ p.weight.T),
        approximate_tolerance=0.05,
    )
    monkeypatch.setitem(registry.REGISTRY, "fake_int8", broken)
    row = next(r for r in run_point(point, *_operands(point), _spec(["fake_int8"])))
    assert row["status"] == "wrong" and "relative Frobenius error" in row["detail"]


def test_torchao_int8_alternative_runs_where_installed_and_is_compared_with_ours():
    pytest.importorskip("torch")
    pytest.importorskip("torchao")
    point = Point(256, 512, 4, 0.9, Pattern())
    names = ["torch_dense", "torch_int8_dyn", "torchao_int8_dyn", "sgemm_csr"]
    rows = {r["contender"]: r for r in run_point(point, *_operands(point), _spec(names))}
    row = rows["torchao_int8_dyn"]
    assert row["status"] == "ok" and row["kind"] == "alternative"
    assert 0 < row["max_rel_error"] <= registry.REGISTRY["torchao_int8_dyn"].approximate_tolerance
    fastest = min(("torch_int8_dyn", "torchao_int8_dyn"),
                  key=lambda n: rows[n]["time_median_s"])
    assert rows["sgemm_csr"]["alternative"] == fastest


def test_a_contender_whose_package_is_missing_is_skipped_with_the_reason(monkeypatch):
    contender = registry.REGISTRY["torchao_int8_dyn"]
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torchao" else real_find_spec(name, *a))
    reason = registry.unavailable_reason(contender)
    if registry.torch_available():
        assert reason == "torchao is not installed (pip install torchao)"
    notes: list[str] = []
    assert "torchao_int8_dyn" not in choose_contenders("sgemm_csr", notes)
    assert any(note.startswith("torchao_int8_dyn skipped") for note in notes)


def test_float64_problems_are_unsupported_by_the_int8_quantizers():
    pytest.importorskip("torch")
    point = Point(64, 128, 4, 0.9, Pattern())
    weight, x = _operands(point)
    problem = registry.Problem(weight.astype(np.float64), x.astype(np.float64), Pattern(), 1)
    with pytest.raises(registry.Unsupported, match="float32"):
        registry.REGISTRY["torch_int8_dyn"].build(problem)


def test_alternatives_stream_their_own_itemsize_in_cold_runs():
    pytest.importorskip("torch")
    point = Point(256, 512, 1, 0.9, Pattern())
    spec = _spec(["numpy_dense", "torch_int8_dyn"], cache="cold")
    spec.llc_bytes = 4 * 256 * 512  # four fp32 weights' worth
    rows = {r["contender"]: r for r in run_point(point, *_operands(point), spec)}
    # int8 weights are a quarter of fp32: four times the copies to exceed the cache.
    assert rows["torch_int8_dyn"]["cold_copies"] == 4 * rows["numpy_dense"]["cold_copies"]


def test_int8_and_bf16_sparse_contenders_run_their_formats_against_their_own_zero_percent():
    pytest.importorskip("torch")
    point = Point(128, 256, 4, 0.7, Pattern())
    weight, x = _operands(point)
    unpruned = WeightCache(np.float32).pruned(Point(128, 256, 4, 0.0, Pattern()))
    names = ["numpy_dense", "torch_int8_dyn", "sgemm_int8", "sgemm_bf16"]
    rows = {r["contender"]: r for r in run_point(point, weight, x, _spec(names),
                                                  unpruned=unpruned, unpruned_cache={})}
    for name, format, bound in (("sgemm_int8", "int8-bitmap", 0.05),
                                ("sgemm_bf16", "bf16-bitmap", 0.02)):
        row = rows[name]
        assert row["status"] == "ok" and row["format"] == format
        assert 0 < row["max_rel_error"] <= bound  # quantized values: close, not equal
        assert is_sparsegemm_figure(row) and row["speedup_vs_own_dense"] > 0
        assert row["alternative"] == "torch_int8_dyn"
