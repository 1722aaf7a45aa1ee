"""The format planner: it picks the fastest contender it timed, never a sparse
format slower than dense, and caches its decisions. Timings are injected
through planner._time_candidates, so these tests do not depend on the machine."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import sparsegemm
from sparsegemm import BSRMatrix, CSRMatrix, planner, timing


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
        self.drop_ratios = []

    def __call__(self, runners, repeats, rounds, drop_slower_than=math.inf):
        self.calls += 1
        self.timed.append(sorted(runners))
        self.drop_ratios.append(drop_slower_than)
        return {name: self.times[name] for name in runners}


@pytest.fixture
def weight():
    rng = np.random.default_rng(0)
    return sparsegemm.block_prune(rng.standard_normal((64, 48)).astype(np.float32), (8, 1), 0.9)


def fake_times(dense, **sparse):
    times = {"dense_numpy": dense, "dense_torch": dense * 1.5}
    times.update({"csr": 1.0, "bitmap": 1.0, "bsr4x1": 1.0, "bsr8x1": 1.0, "bsr16x1": 1.0,
                  "bsr4x4": 1.0})
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


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_from_16_rows_every_bsr_shape_is_timed_even_on_a_dense_weight(monkeypatch, sparsity):
    rng = np.random.default_rng(2)
    weight = sparsegemm.magnitude_prune(rng.standard_normal((64, 64)), sparsity)
    timer = FakeTimer(fake_times(1.0, bsr4x4=0.5))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    result = sparsegemm.plan(weight, planner.DENSE_BSR_MIN_BATCH, num_threads=1)
    bsr_shapes = {name for name in planner.CANDIDATES if name.startswith("bsr")}
    assert bsr_shapes <= set(timer.timed[0])
    assert result.format == "bsr4x4"
    planner.clear_cache()
    below = sparsegemm.plan(weight, planner.DENSE_BSR_MIN_BATCH - 1, num_threads=1)
    assert "bsr4x4" in below.skipped and "rows" in below.skipped["bsr4x4"]


def test_choose_is_the_argmin_with_a_margin():
    times = {"dense_numpy": 2.0, "dense_torch": 1.0, "csr": 0.8, "bsr4x1": 0.5}
    assert planner.choose(times, 1.1)["format"] == "bsr4x1"
    assert planner.choose(times, 2.5)["format"] == "dense"
    assert planner.choose({"dense_numpy": 1.0}, 1.1)["format"] == "dense"
    with pytest.raises(ValueError):
        planner.choose({"csr": 1.0})


def test_real_timing_picks_sparse_where_sparse_cannot_lose():
    # Real measurements. 1 stored entry in 10,000 at batch 1: CSR reads ~0.1% of the
    # bytes dense does, so any machine picks a sparse format, by far.
    rng = np.random.default_rng(3)
    weight = np.zeros((1024, 1024), np.float32)
    weight.flat[rng.choice(weight.size, 100, replace=False)] = 1.0
    result = sparsegemm.plan(weight, 1, num_threads=1, repeats=3, rounds=2, cache=False)
    assert result.format in planner.CANDIDATES, result.times
    assert result.speedup > 3.0, result.times
    x = rng.standard_normal((1, 1024)).astype(np.float32)
    np.testing.assert_allclose(sparsegemm.linear(x, result.operand), x @ weight.T, atol=1e-5)


def test_a_dense_weight_stays_dense_without_timing_a_sparse_format(monkeypatch):
    timer = FakeTimer(fake_times(1.0, csr=0.01, bsr4x1=0.01))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    dense = np.random.default_rng(4).standard_normal((32, 32)).astype(np.float32)
    result = sparsegemm.plan(dense, 8, num_threads=1)
    assert result.format == "dense" and set(result.skipped) == set(planner.CANDIDATES)
    assert timer.timed == [["dense_numpy"]] or timer.timed == [["dense_numpy", "dense_torch"]]


def test_cache_key_separates_layers_with_the_same_shape_nnz_and_fill(monkeypatch):
    timer = FakeTimer(fake_times(1.0, csr=0.1))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    first = np.zeros((64, 64), np.float32)
    second = np.zeros((64, 64), np.float32)
    first[::16, ::16] = 1.0  # one entry per 16x1, 4x4, ... block in both
    second[1::16, ::16] = 1.0
    a = sparsegemm.plan(first, 4, num_threads=1)
    b = sparsegemm.plan(second, 4, num_threads=1)
    assert a.key != b.key and not b.cached and timer.calls == 2


def _flip_gather_choice(monkeypatch):
    flipped = not planner._core.prefer_hardware_gather()
    monkeypatch.setattr(planner._core, "prefer_hardware_gather", lambda: flipped)


def _flip_bitmap_walk(monkeypatch):
    flipped = "expand" if planner._core.bitmap_walk() == "compress" else "compress"
    monkeypatch.setattr(planner._core, "bitmap_walk", lambda: flipped)


def _flip_bitmap_prefetch(monkeypatch):
    flipped = "near" if planner._core.bitmap_prefetch() != "near" else "far"
    monkeypatch.setattr(planner._core, "bitmap_prefetch", lambda: flipped)


@pytest.mark.parametrize(
    "change",
    [
        lambda mp: mp.setattr(sparsegemm, "__version__", "99.0"),
        lambda mp: mp.setattr(np, "__version__", "99.0"),
        lambda mp: _flip_gather_choice(mp),
        lambda mp: _flip_bitmap_prefetch(mp),
        lambda mp: _flip_bitmap_walk(mp),
    ],
    ids=["sparsegemm version", "numpy version", "SPARSEGEMM_GATHER", "SPARSEGEMM_BITMAP_PREFETCH",
         "SPARSEGEMM_BITMAP_WALK"],
)
def test_a_decision_cached_under_other_software_is_not_reused(monkeypatch, weight, tmp_path,
                                                              change):
    timer = FakeTimer(fake_times(1.0, bsr8x1=0.2))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    first = sparsegemm.plan(weight, 16, num_threads=1, cache_dir=tmp_path)
    planner.clear_cache()
    change(monkeypatch)
    second = sparsegemm.plan(weight, 16, num_threads=1, cache_dir=tmp_path)
    assert second.key != first.key and not second.cached and timer.calls == 2


def test_bad_arguments(weight):
    with pytest.raises(ValueError, match="batch"):
        sparsegemm.plan(weight, 0)
    with pytest.raises(ValueError, match="unknown candidates"):
        sparsegemm.plan(weight, 4, candidates=["bsr3x3"])
    with pytest.raises(ValueError, match="margin"):
        sparsegemm.plan(weight, 4, margin=0.5)


# --- dtypes and the dense plan ----------------------------------------------------------------

def test_operand_keeps_the_weights_dtype(monkeypatch, weight):
    monkeypatch.setattr(planner, "_time_candidates", FakeTimer(fake_times(1.0, csr=0.1)))
    result = sparsegemm.plan(weight.astype(np.float64), 8, num_threads=1)
    assert result.operand.dtype == np.float64
    explicit = sparsegemm.plan(weight.astype(np.float64), 8, num_threads=1, dtype=np.float32)
    assert explicit.operand.dtype == np.float32


def test_a_dense_plan_still_multiplies(monkeypatch, weight):
    monkeypatch.setattr(planner, "_time_candidates", FakeTimer(fake_times(0.5, csr=0.9)))
    result = sparsegemm.plan(weight, 4, num_threads=1)
    assert result.format == "dense" and result.operand is None
    x = np.random.default_rng(1).standard_normal((4, weight.shape[1])).astype(np.float32)
    bias = np.arange(weight.shape[0], dtype=np.float32)
    np.testing.assert_allclose(result.linear(x, bias), x @ weight.T + bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="plan.linear"):
        sparsegemm.linear(x, result.operand)


def test_a_sparse_plan_multiplies_with_its_operand(monkeypatch, weight):
    monkeypatch.setattr(planner, "_time_candidates", FakeTimer(fake_times(1.0, bsr8x1=0.1)))
    result = sparsegemm.plan(weight, 4, num_threads=1)
    x = np.ones((2, weight.shape[1]), dtype=np.float32)
    np.testing.assert_allclose(result.linear(x), x @ weight.T, rtol=1e-5, atol=1e-5)


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
    assert planner.cold_copies(10 * 1024 * 1024, llc) == 7  # 70 MB > 64 MB
    # Never one copy: back-to-back calls on one operand find part of it cached.
    assert planner.cold_copies(64 * 1024 * 1024, llc) == 2
    assert planner.cold_copies(1024 * 1024 * 1024, llc) == 2
    assert planner.cold_copies(1, llc) == planner.MAX_COLD_COPIES
    assert planner.cold_copies(0, llc) == 1  # an empty operand needs no copies
    assert planner.last_level_cache_bytes()[0] > 0


def test_small_batches_rotate_separately_built_copies(monkeypatch, weight):
    # A small weight at batch <= 16 is timed through enough copies to leave the cache.
    built = []
    real_build = planner._build

    def counting_build(name, W, value_dtype=None):
        built.append(name)
        return real_build(name, W, value_dtype)

    monkeypatch.setattr(planner, "_build", counting_build)
    monkeypatch.setattr(planner, "last_level_cache_bytes", lambda: (1024 * 1024, "test"))
    seen = {}

    def timer(runners, repeats, rounds, drop_slower_than=math.inf):
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


def test_every_copy_is_called_before_the_timing(monkeypatch, weight):
    """A format's setup on a copy's first call (CSR's chunk order) must not be timed, nor
    make the planner stop timing that candidate after the first round."""
    monkeypatch.setattr(planner, "last_level_cache_bytes", lambda: (1024 * 1024, "test"))
    called = set()
    real_linear = planner.linear

    def recording_linear(x, operand, **options):
        called.add(id(operand))
        return real_linear(x, operand, **options)

    monkeypatch.setattr(planner, "linear", recording_linear)
    built = []
    real_build = planner._build
    monkeypatch.setattr(planner, "_build",
                        lambda name, W, dtype=None: built.append(real_build(name, W, dtype))
                        or built[-1])
    called_before_timing = set()
    timer = FakeTimer(fake_times(1.0))

    def recording_timer(*args, **options):
        called_before_timing.update(called)
        return timer(*args, **options)

    monkeypatch.setattr(planner, "_time_candidates", recording_timer)
    sparsegemm.plan(weight, 4, num_threads=1, candidates=["csr", "bitmap"], cache=False)
    assert len(built) > 2  # several cold copies of each
    assert {id(operand) for operand in built} <= called_before_timing
    assert timer.drop_ratios == [planner.PLAN_DROP_RATIO]


def test_dense_names_the_references_timed(monkeypatch, weight):
    timer = FakeTimer(fake_times(dense=10.0))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    planner.plan(weight, 32, dense=("numpy",), cache=False)
    assert "dense_numpy" in timer.timed[0] and "dense_torch" not in timer.timed[0]
    pytest.importorskip("torch")
    planner.plan(weight, 32, dense=("torch",), cache=False)
    assert "dense_torch" in timer.timed[1] and "dense_numpy" not in timer.timed[1]


@pytest.mark.parametrize("dense", [(), ("blas",), ("numpy", "cupy")])
def test_bad_dense_references(weight, dense):
    with pytest.raises(ValueError, match="dense must name"):
        planner.plan(weight, 32, dense=dense)


def test_numpy_blocks_are_followed_by_the_openblas_pause(monkeypatch, weight):
    seen = {}

    def spy(calls, references, settings, first_call_s=None):
        seen["settings"] = settings
        return timing.PointTimings({name: timing.Timing((1.0,), 1) for name in calls}, 0, True)

    monkeypatch.setattr(planner, "measure", spy)
    planner.plan(weight, 32, cache=False)
    assert seen["settings"].settle_after == ("dense_numpy",)
    assert seen["settings"].settle_s == planner.openblas_spin_seconds()


@pytest.mark.parametrize("batch", [1, 16])
def test_bfloat16_plans_bfloat16_operands_against_torch_in_bfloat16(monkeypatch, weight, batch):
    pytest.importorskip("torch")
    from sparsegemm._dtypes import bfloat16_rounded

    timer = FakeTimer(fake_times(1.0, csr=0.1))
    monkeypatch.setattr(planner, "_time_candidates", timer)
    result = planner.plan(weight, batch, dtype="bfloat16", dense=("torch",))
    assert result.format == "csr" and result.operand.value_dtype == "bfloat16"
    rounded = bfloat16_rounded(weight)
    np.testing.assert_array_equal(result.operand.to_dense(), rounded)
    # Every contender, torch's bfloat16 product included, passed the check against the
    # product of the rounded weight before the timing.
    assert "dense_torch" in timer.timed[0] and "bitmap" in timer.timed[0]
    again = planner.plan(weight, batch, dtype="bfloat16", dense=("torch",))
    assert again.cached and again.operand.value_dtype == "bfloat16"
    assert planner.plan(weight, batch, dense=("torch",)).key != result.key


def test_the_float64_references_run_on_one_blas_thread(monkeypatch, weight):
    # OpenBLAS workers woken by the reference products spin for a while after them
    # and took a core from the first contenders timed, so the references run on one
    # BLAS thread (no worker wakes).
    limits = []
    real_limit = planner.blas_thread_limit

    def recording_limit(threads):
        limits.append(threads)
        return real_limit(threads)

    monkeypatch.setattr(planner, "blas_thread_limit", recording_limit)
    planner._runners(weight, 4, 1, {"csr": CSRMatrix.from_dense(weight)}, ("numpy",))
    assert limits[:1] == [1]
