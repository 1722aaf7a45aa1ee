"""The format planner: it picks the fastest contender it timed, never a sparse
format slower than dense, and caches its decisions. Timings are injected
through planner._time_candidates, so these tests do not depend on the machine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sparsegemm
from sparsegemm import BSRMatrix, CSRMatrix, planner


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.delenv("SPARSEGEMM_PLAN_CACHE", raising=False)
    planner.clear_cache()
    yield
    planner.clear_cache()


class FakeTimer:
    """Stands in for planner._time_candidates with fixed times per contender."""

    def __init__(self, times):
        self.times = times
        self.calls = 0
        self.timed = []

    def __call__(self, runners, repeats, rounds):
        self.calls += 1
        self.timed.append(sorted(runners))
        return {name: self.times[name] for name in runners}


@pytest.fixture
def weight():
    rng = np.random.default_rng(0)
    return sparsegemm.block_prune(rng.standard_normal((64, 48)).astype(np.float32), (8, 1), 0.9)


def fake_times(dense, **sparse):
    times = {"dense_numpy": dense, "dense_torch": dense * 1.5}
    times.update({"csr": 1.0, "bitmap": 1.0, "bsr4x1": 1.0, "bsr8x1": 1.0, "bsr16x1": 1.0, "bsr4x4": 1.0})
    times.update(sparse)
    return times


def test_picks_the_fastest_sparse_format(monkeypatch, weight):
    timer = FakeTimer(fake_times(1.0, bsr8x1=0.2, bsr4x1=0.3))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    result = sparsegemm.plan(weight, 64, num_threads=1)
    assert result.format == "bsr8x1"
    assert isinstance(result.operand, BSRMatrix) and result.operand.blocksize == (8, 1)
    np.testing.assert_array_equal(result.operand.to_dense(), weight)
    assert result.speedup == pytest.approx(1.0 / 0.2)
    assert result.dense_time == pytest.approx(1.0)
    assert set(result.times) >= {"dense_numpy", "csr", "bsr8x1"}
    assert not result.cached


def test_never_picks_sparse_slower_than_dense(monkeypatch, weight):
    monkeypatch.setattr(planner, "_time_candidates",
                        FakeTimer(fake_times(0.5, csr=0.9, bsr4x1=0.6, bsr8x1=0.51, bsr16x1=0.7)))
    result = sparsegemm.plan(weight, 64, num_threads=1)
    assert result.format == "dense" and result.operand is None and result.speedup == 1.0


def test_sparse_must_beat_dense_by_the_margin(monkeypatch, weight):
    monkeypatch.setattr(planner, "_time_candidates", FakeTimer(fake_times(1.0, bsr4x1=0.95)))
    assert sparsegemm.plan(weight, 8, num_threads=1).format == "dense"
    planner.clear_cache()
    assert sparsegemm.plan(weight, 8, num_threads=1, margin=1.0).format == "bsr4x1"


def test_picks_csr_when_it_is_fastest(monkeypatch, weight):
    monkeypatch.setattr(planner, "_time_candidates", FakeTimer(fake_times(1.0, csr=0.1)))
    result = sparsegemm.plan(weight, 1, num_threads=1)
    assert result.format == "csr" and isinstance(result.operand, CSRMatrix)


def test_in_process_cache_hits(monkeypatch, weight):
    timer = FakeTimer(fake_times(1.0, bsr4x4=0.1))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    first = sparsegemm.plan(weight, 32, num_threads=1)
    second = sparsegemm.plan(weight.copy(), 32, num_threads=1)
    assert timer.calls == 1
    assert second.cached and second.format == first.format == "bsr4x4"
    assert second.key == first.key and second.times == first.times
    np.testing.assert_array_equal(second.operand.to_dense(), weight)
    sparsegemm.plan(weight, 33, num_threads=1)  # another batch is another decision
    sparsegemm.plan(weight, 32, num_threads=2)  # and so is another thread count
    sparsegemm.plan(weight, 32, num_threads=1, cache=False)
    assert timer.calls == 4


def test_disk_cache_round_trip(monkeypatch, weight, tmp_path):
    timer = FakeTimer(fake_times(1.0, bsr16x1=0.25))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    first = sparsegemm.plan(weight, 16, num_threads=1, cache_dir=tmp_path)
    stored = json.loads((tmp_path / "plans.json").read_text())
    assert stored[first.key]["format"] == "bsr16x1"
    planner.clear_cache()
    second = sparsegemm.plan(weight, 16, num_threads=1, cache_dir=tmp_path)
    assert timer.calls == 1 and second.cached and second.format == "bsr16x1"
    (tmp_path / "plans.json").write_text("{ damaged")
    planner.clear_cache()
    assert not sparsegemm.plan(weight, 16, num_threads=1, cache_dir=tmp_path).cached


def test_cache_key_follows_the_pattern(monkeypatch, weight):
    timer = FakeTimer(fake_times(1.0))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    first = sparsegemm.plan(weight, 4, num_threads=1)
    other = weight.copy()
    other[0, 0] = 0.0 if other[0, 0] else 1.0
    assert sparsegemm.plan(other, 4, num_threads=1).key != first.key


def test_formats_that_would_store_nearly_dense_are_skipped(monkeypatch):
    rng = np.random.default_rng(1)
    unstructured = sparsegemm.magnitude_prune(rng.standard_normal((64, 64)), 0.6)
    timer = FakeTimer(fake_times(1.0, csr=0.5))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    result = sparsegemm.plan(unstructured, 8, num_threads=1, dtype=np.float64)
    assert {"bsr16x1", "bsr8x1", "bsr4x4"} <= set(result.skipped)
    assert "csr" not in result.skipped
    assert not set(result.skipped) & set(timer.timed[0])
    assert result.format == "csr"


def test_choose_is_the_argmin_with_a_margin():
    times = {"dense_numpy": 2.0, "dense_torch": 1.0, "csr": 0.8, "bsr4x1": 0.5}
    assert planner.choose(times, 1.1)["format"] == "bsr4x1"
    assert planner.choose(times, 2.5)["format"] == "dense"
    assert planner.choose({"dense_numpy": 1.0}, 1.1)["format"] == "dense"
    with pytest.raises(ValueError):
        planner.choose({"csr": 1.0})


def test_real_timing_end_to_end(weight):
    # Real measurements, tiny: only checks that everything runs and agrees.
    result = sparsegemm.plan(weight, 3, num_threads=1, repeats=1, rounds=1, cache=False)
    assert result.format in {"dense", *planner.CANDIDATES}
    assert result.speedup >= 1.0
    chosen = result.times[result.format] if result.format != "dense" else result.dense_time
    assert chosen <= result.dense_time
    assert all(t > 0 for t in result.times.values())


def test_bad_arguments(weight):
    with pytest.raises(ValueError, match="batch"):
        sparsegemm.plan(weight, 0)
    with pytest.raises(ValueError, match="unknown candidates"):
        sparsegemm.plan(weight, 4, candidates=["bsr3x3"])
    with pytest.raises(ValueError, match="margin"):
        sparsegemm.plan(weight, 4, margin=0.5)


def test_picks_the_bitmap_when_it_is_fastest(monkeypatch):
    rng = np.random.default_rng(3)
    unstructured = sparsegemm.magnitude_prune(rng.standard_normal((64, 96)), 0.4)
    monkeypatch.setattr(planner, "_time_candidates", FakeTimer(fake_times(1.0, bitmap=0.4)))
    result = sparsegemm.plan(unstructured.astype(np.float32), 1, num_threads=1)
    assert result.format == "bitmap" and isinstance(result.operand, sparsegemm.BitmapMatrix)
    np.testing.assert_array_equal(result.operand.to_dense(), unstructured.astype(np.float32))
    assert "csr" in result.skipped  # CSR at 60% density is not timed; the bitmap is
    assert result.speedup == pytest.approx(2.5)


def test_nearly_dense_weights_skip_the_bitmap(monkeypatch):
    rng = np.random.default_rng(4)
    nearly_dense = sparsegemm.magnitude_prune(rng.standard_normal((32, 64)), 0.05)
    timer = FakeTimer(fake_times(1.0))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    result = sparsegemm.plan(nearly_dense, 1, num_threads=1)
    assert "bitmap" in result.skipped and "bitmap" not in timer.timed[0]


def test_cold_copies_exceed_twice_the_last_level_cache():
    llc = 32 * 1024 * 1024
    assert planner.cold_copies(64 * 1024 * 1024, llc) == 1
    assert planner.cold_copies(10 * 1024 * 1024, llc) == 7  # 70 MB > 64 MB
    assert planner.cold_copies(1, llc) == planner.MAX_COLD_COPIES
    assert planner.last_level_cache_bytes() > 0


def test_small_batches_rotate_separately_built_copies(monkeypatch, weight):
    # A small weight at batch <= 16 is timed through enough copies to leave the cache.
    built = []
    real_build = planner._build

    def counting_build(name, W):
        built.append(name)
        return real_build(name, W)

    monkeypatch.setattr(planner, "_build", counting_build)
    monkeypatch.setattr(planner, "last_level_cache_bytes", lambda: 1024 * 1024)
    seen = {}

    def timer(runners, repeats, rounds):
        seen.update(runners)
        return {name: 1.0 for name in runners}

    monkeypatch.setattr(planner, "_time_candidates", timer)
    sparsegemm.plan(weight, 4, num_threads=1, candidates=["csr", "bitmap"], cache=False)
    copies = {name: built.count(name) for name in ("csr", "bitmap")}
    csr = sparsegemm.CSRMatrix.from_dense(weight)
    assert copies["csr"] == planner.cold_copies(csr._storage_nbytes(), 1024 * 1024) > 1
    assert copies["bitmap"] > 1
    built.clear()
    sparsegemm.plan(weight, 64, num_threads=1, candidates=["csr", "bitmap"], cache=False)
    assert sorted(built) == ["bitmap", "csr"]  # large batches: one warm operand each
