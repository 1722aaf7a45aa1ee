"""The timing harness: output checks, interleaving, slow-phase re-measurement."""

import numpy as np
import pytest

from sparsegemm.bench.harness import (
    HarnessSettings,
    Timing,
    WrongResult,
    check_output,
    measure,
    tolerance,
)

FAST = HarnessSettings(rounds=3, target_block_s=0.0002, max_calls=3, sleep_s=0.0, max_remeasure=0)


def test_check_output_accepts_rounding_and_rejects_wrong_answers():
    reference = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert check_output(reference.astype(np.float32), reference, 1024) < 1e-7
    with pytest.raises(WrongResult, match="exceeds"):
        check_output(reference * 1.01, reference, 1024)
    with pytest.raises(WrongResult, match="shape"):
        check_output(reference.T, reference, 1024)
    nan = reference.copy()
    nan[0, 0] = np.nan
    with pytest.raises(WrongResult):
        check_output(nan, reference, 1024)


def test_tolerance_grows_with_k_and_is_tighter_for_float64():
    assert tolerance(np.float32, 4096) == pytest.approx(2e-3)
    assert tolerance(np.float32, 16) == pytest.approx(1e-3)
    assert tolerance(np.float64, 4096) < 1e-8


def test_timing_statistics():
    timing = Timing((1.0, 2.0, 3.0, 4.0, 100.0), 1)
    assert timing.median == 3.0
    assert timing.quartiles == (2.0, 4.0)
    assert timing.spread == 100.0


def test_every_contender_is_timed_in_every_round_after_a_warm_up(clock):
    log = []
    calls = {name: (lambda name=name: log.append(name)) for name in ("a", "b", "c")}
    result = measure(calls, ["a"], FAST)
    assert set(result.timings) == {"a", "b", "c"}
    assert all(len(t.samples) == 3 for t in result.timings.values())
    # one warm-up plus a block of max_calls per round, and on the first visit a probe of
    # max_calls that sizes the blocks; rounds rotate the order
    assert log.count("a") == 3 + 3 * (1 + 3)
    first_round_length = 3 * (1 + 3 + 3)
    first_of_each_round = [log[0], log[first_round_length], log[first_round_length + 12]]
    assert first_of_each_round == ["a", "b", "c"]


def test_unsteady_reference_is_remeasured_and_flagged(clock):
    # warm-up, then one-call blocks: samples 1, 2, 1 ms (ratio 2) in both attempts
    dense = clock.call_taking([0.001] + [0.001, 0.001, 0.002, 0.002, 0.001, 0.001] * 2)
    settings = HarnessSettings(
        rounds=3,
        target_block_s=0.0,
        max_calls=1,
        sleep_s=0.0,
        max_remeasure=1,
        skip_warmup_above_s=0.0,
    )
    result = measure({"dense": dense, "sparse": lambda: None}, ["dense"], settings)
    assert result.remeasured == 1
    assert not result.steady


def test_a_calm_second_attempt_is_kept(clock):
    dense = clock.call_taking([0.001] + [0.001, 0.004, 0.001] + [0.002, 0.002, 0.002])
    settings = HarnessSettings(
        rounds=3,
        target_block_s=0.0,
        max_calls=1,
        sleep_s=0.0,
        max_remeasure=2,
        skip_warmup_above_s=0.0,
    )
    result = measure({"dense": dense}, ["dense"], settings)
    assert result.remeasured == 1 and result.steady
    assert result.timings["dense"].samples == pytest.approx((0.002, 0.002, 0.002))


def test_steady_reference_is_measured_once(clock):
    dense = clock.call_taking([0.002] * 4)
    settings = HarnessSettings(
        rounds=3,
        target_block_s=0.0,
        max_calls=1,
        sleep_s=0.0,
        max_remeasure=2,
        skip_warmup_above_s=0.0,
    )
    result = measure({"dense": dense}, ["dense"], settings)
    assert result.remeasured == 0 and result.steady


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        HarnessSettings(rounds=0)


def test_a_long_first_call_sizes_the_blocks_but_a_short_one_does_not():
    counts = {"long": 0, "short": 0}
    calls = {
        name: (lambda name=name: counts.__setitem__(name, counts[name] + 1)) for name in counts
    }
    settings = HarnessSettings(
        rounds=2,
        target_block_s=1.0,
        max_calls=4,
        sleep_s=0.0,
        max_remeasure=0,
        skip_warmup_above_s=0.5,
        max_contender_s=1.5,
    )
    # "long" claims 1 s per call: blocks of 1, no warm-up, budget for one round only
    result = measure(calls, [], settings, first_call_s={"long": 1.0, "short": 0.001})
    assert result.timings["long"].samples and len(result.timings["long"].samples) == 1
    assert counts["long"] == 1
    # "short" is sized by its own warm-up and a probe of max_calls calls (really ~0 s each):
    # max_calls per block, a warm-up each round
    assert result.timings["short"].calls_per_sample == 4
    assert counts["short"] == 4 + 2 * (1 + 4)
