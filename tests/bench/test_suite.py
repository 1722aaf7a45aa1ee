"""One point through the contenders: checks, skips, baselines."""

import numpy as np
import pytest
from sparsegemm.bench import contenders as registry
from sparsegemm.bench.harness import HarnessSettings
from sparsegemm.bench.suite import SuiteSpec, run_point, run_suite
from sparsegemm.bench.workloads import Pattern, Point, WeightCache

FAST = HarnessSettings(rounds=2, target_block_s=0.0002, max_calls=2, sleep_s=0.0, max_remeasure=0)


def _spec(names, quick=False):
    return SuiteSpec(
        points=[],
        contenders=names,
        dtype=np.dtype(np.float32),
        threads=1,
        harness=FAST,
        quick=quick,
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
    assert registry.has_block_formats()
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
