"""The shared timing loop and thread-limit context (planner, bench and sparsify use them)."""

import importlib
import itertools

import pytest

from sparsegemm import timing


def test_median_seconds_makes_one_warm_up_then_single_timed_calls(clock):
    call = clock.call_taking([5.0, 3.0, 1.0, 2.0])  # warm-up, then three timed calls
    assert timing.median_seconds(call, repeats=3) == 2.0


def test_thread_limits_sets_and_restores_torch_threads():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with timing.thread_limits(1, include_torch=True):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_thread_limits_limits_numpy_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with timing.thread_limits(1):
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert blas and all(i["num_threads"] == 1 for i in blas)


def test_planner_bench_and_sparsify_share_the_timing_loop():
    from sparsegemm import planner
    from sparsegemm.bench import harness, suite

    assert harness.measure is timing.measure and suite.thread_limits is timing.thread_limits
    assert planner.measure is timing.measure and planner.thread_limits is timing.thread_limits
    pytest.importorskip("torch")
    auto_module = importlib.import_module("sparsegemm.torch.auto")  # times convolutions
    assert auto_module.median_seconds is timing.median_seconds
    assert suite.cold_copies(10, 100) == timing.cold_copies(10, 100, suite.MAX_COLD_COPIES)
    assert planner.cold_copies(10, 100) == timing.cold_copies(10, 100, planner.MAX_COLD_COPIES)


def test_a_slow_wake_up_call_does_not_shrink_the_blocks(clock):
    """The first call after the sleep pays the pools' wake-up (here 10x a steady call);
    the block is sized from the steady calls after it, so it lasts target_block_s."""
    call = clock.call_taking(itertools.chain([1e-3], itertools.repeat(1e-4)))
    settings = timing.TimingSettings(
        rounds=3, target_block_s=0.02, max_calls=1000, sleep_s=0.003, max_remeasure=0
    )
    result = timing.measure({"short": call}, [], settings).timings["short"]
    assert result.calls_per_sample == 200  # 20 ms / 0.1 ms, not 20 ms / 1 ms
    assert result.samples == pytest.approx((1e-4, 1e-4, 1e-4))


# binary fractions of a second, so the fake clock's sums are exact
@pytest.mark.parametrize("seconds_per_call, calls", [(2**-10, 5), (2**-13, 32), (2**-20, 1000)])
def test_blocks_last_the_target_within_min_and_max_calls(clock, seconds_per_call, calls):
    call = clock.call_taking(itertools.repeat(seconds_per_call))
    settings = timing.TimingSettings(
        rounds=2, target_block_s=2**-8, min_calls=5, max_calls=1000, sleep_s=0.0,
        max_remeasure=0,
    )
    assert timing.measure({"c": call}, [], settings).timings["c"].calls_per_sample == calls


def test_min_calls_above_max_calls_is_rejected():
    with pytest.raises(ValueError):
        timing.TimingSettings(min_calls=10, max_calls=5)


def test_the_planner_times_blocks_of_about_plan_block_s(clock):
    """Blocks of 5 sub-millisecond calls read 600-900 us instead of 60-160 us in some
    processes; the planner's blocks now last PLAN_BLOCK_S, with at least `repeats` calls."""
    from sparsegemm import planner

    counts = {"fast": 0, "slow": 0}
    durations = {"fast": 1e-4, "slow": 1e-2}

    def runner(name):
        def call():
            counts[name] += 1
            clock.now += durations[name]
        return call

    times = planner._time_candidates({name: runner(name) for name in counts}, 5, 1)
    assert times == pytest.approx(durations)
    block = round(planner.PLAN_BLOCK_S / durations["fast"])
    assert counts["fast"] >= block  # one block of PLAN_BLOCK_S, besides warm-up and probe
    assert counts["slow"] <= 5 + 2  # a slow call keeps `repeats` calls (plus warm-up, probe)


def _counted(clock, seconds_per_call):
    """A call of fixed duration on the fake clock, and the list counting its calls."""
    made = []

    def call():
        made.append(1)
        clock.now += seconds_per_call
    return call, made


def _counted_durations(clock, durations):
    """A call taking the next of ``durations`` on the fake clock, and the list counting
    its calls."""
    made = []
    durations = iter(durations)

    def call():
        made.append(1)
        clock.now += next(durations)
    return call, made


def test_a_contender_far_behind_after_the_first_round_is_not_timed_again(clock):
    settings = timing.TimingSettings(rounds=4, calls_per_block=2, sleep_s=0.0,
                                     max_remeasure=0, drop_slower_than=2.0)
    durations = {"dense": 2**-6, "close": 2**-7 * 1.5, "far": 2**-7 * 2.5, "fast": 2**-7}
    calls, made = {}, {}
    for name, seconds in durations.items():
        calls[name], made[name] = _counted(clock, seconds)
    timings = timing.measure(calls, ["dense"], settings).timings
    # The reference is timed in every round although 2x the fastest; the call
    # within 2x stays; the one beyond keeps its first sample only.
    assert [len(timings[n].samples) for n in durations] == [4, 4, 1, 4]
    assert timings["far"].median == durations["far"]
    # Its calls: the first visit's probe call, then one block of two.
    assert len(made["far"]) == 1 + 2
    assert len(made["fast"]) == 1 + 2 + 3 * (1 + 2)  # later rounds: warm-up and a block


def test_a_slow_first_block_after_a_fast_probe_does_not_drop_a_contender(clock):
    """The faster of the warm-up probe and the first block decides the drop: one slow
    block (a stall) must not drop the fastest contender."""
    settings = timing.TimingSettings(rounds=3, calls_per_block=1, sleep_s=0.0,
                                     max_remeasure=0, drop_slower_than=2.0)
    dense = clock.call_taking(itertools.repeat(2**-8))
    # Its probe call, one slow block, then its real speed.
    stalled, made = _counted_durations(clock, itertools.chain([2**-9, 2**-4],
                                                              itertools.repeat(2**-9)))
    result = timing.measure({"dense": dense, "stalled": stalled}, ["dense"], settings)
    assert result.timings["stalled"].samples == (2**-4, 2**-9, 2**-9)
    assert result.timings["stalled"].median == 2**-9
    assert len(made) == 2 + 2 * 2  # probe and block, then warm-up and block twice


def test_a_contender_dropped_in_an_unsteady_attempt_is_timed_again(clock):
    """A remeasure (the reference's samples disagreed) times every contender afresh: a
    stall in the unsteady attempt must not drop the fastest for good."""
    settings = timing.TimingSettings(rounds=2, calls_per_block=1, sleep_s=0.0,
                                     max_remeasure=1, drop_slower_than=2.0)
    # The reference disagrees with itself in the first attempt only.
    dense = clock.call_taking(itertools.chain([2**-8, 2**-8, 2**-8, 2**-6],
                                              itertools.repeat(2**-8)))
    # A stall over its probe and first block, then its real speed.
    stalled, made = _counted_durations(clock, itertools.chain([2**-4, 2**-4],
                                                              itertools.repeat(2**-9)))
    result = timing.measure({"dense": dense, "stalled": stalled}, ["dense"], settings)
    assert result.remeasured == 1 and result.steady
    assert result.timings["stalled"].samples == (2**-9, 2**-9)
    # First attempt: probe and one block (dropped); second: a block in each of 2 rounds
    # (sized by the stalled probe, above skip_warmup_above_s: no warm-up calls).
    assert len(made) == 2 + 2


def test_without_a_drop_ratio_every_contender_is_timed_fully(clock):
    settings = timing.TimingSettings(rounds=3, calls_per_block=1, sleep_s=0.0, max_remeasure=0)
    calls = {"fast": clock.call_taking(itertools.repeat(2**-10)),
             "slow": clock.call_taking(itertools.repeat(2**-2))}
    timings = timing.measure(calls, [], settings).timings
    assert [len(timings[n].samples) for n in calls] == [3, 3]


@pytest.mark.parametrize("ratio", [0.5, float("nan")])
def test_a_drop_ratio_below_one_is_rejected(ratio):
    # Below 1 even the fastest call would be dropped.
    with pytest.raises(ValueError):
        timing.TimingSettings(drop_slower_than=ratio)


def test_the_planner_stops_timing_a_candidate_far_behind(clock):
    from sparsegemm import planner

    durations = {planner.DENSE_TORCH: 2**-6, "csr": 2**-9, "bitmap": 2**-9 * 3}
    calls, made = {}, {}
    for name, seconds in durations.items():
        calls[name], made[name] = _counted(clock, seconds)
    times = planner._time_candidates(calls, 5, 3, planner.PLAN_DROP_RATIO)
    assert times == pytest.approx(durations)  # every candidate still has its time
    assert len(made["bitmap"]) < len(made["csr"]) / 2


def test_the_planner_loop_times_every_candidate_fully_unless_asked(clock):
    """The floors scripts report every contender's time: by default nothing is dropped."""
    from sparsegemm import planner

    durations = {planner.DENSE_TORCH: 2**-6, "csr": 2**-9, "bitmap": 2**-9 * 3}
    calls, made = {}, {}
    for name, seconds in durations.items():
        calls[name], made[name] = _counted(clock, seconds)
    planner._time_candidates(calls, 5, 3)
    assert len(made["bitmap"]) == len(made["csr"])


def test_a_settling_contender_is_followed_by_its_pause(clock):
    # OpenBLAS's workers spin after each call; the next contender must not be
    # timed while they do.
    pauses = []
    sleep = clock.sleep

    def recording_sleep(seconds):
        pauses.append(seconds)
        sleep(seconds)

    clock.sleep = recording_sleep
    settings = timing.TimingSettings(rounds=3, calls_per_block=2, sleep_s=0.001,
                                     settle_after=("numpy",), settle_s=0.25)
    calls = {"numpy": clock.call_taking(itertools.repeat(0.01)),
             "sparse": clock.call_taking(itertools.repeat(0.01))}
    timing.measure(calls, ["numpy"], settings)
    assert pauses.count(0.25) == 3  # once after each of numpy's three blocks


@pytest.mark.parametrize("value, exponent", [(None, 28), ("20", 20), ("2", 4), ("40", 30),
                                             ("junk", 28)])
def test_openblas_spin_follows_its_thread_timeout(monkeypatch, value, exponent):
    if value is None:
        monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", value)
    assert timing.openblas_spin_seconds() == 2.0 ** exponent / 1.5e9
