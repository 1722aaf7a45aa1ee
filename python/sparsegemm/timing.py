"""The one timing loop of sparsegemm, and the one thread-limit context.

The planner (:func:`sparsegemm.plan`), the benchmark (``sparsegemm bench``) and
``sparsegemm.torch.sparsify`` all time calls with :func:`measure` and limit
thread pools with :func:`thread_limits`. How :func:`measure` times (see
BENCHMARKING.md for why):

- the calls run in rounds inside one process; in each round each call sleeps a
  few milliseconds (so another runtime's idle pool stops spinning), makes one
  warm-up call, then times a block of calls; the block's mean per call is one
  sample, and the round order rotates so no call always goes first;
- a block's size is fixed on the call's first visit from a short probe after
  its warm-up call (the warm-up itself pays the wake-up, so it would size short);
- a call's figure is the median of its samples, with quartiles and min/max;
- a slow call (many milliseconds) skips the warm-up, which only matters for
  waking thread pools, and a call whose samples would overrun
  ``max_contender_s`` takes fewer samples (its sample count shows it);
- with ``drop_slower_than``, a contender (not a reference) whose first block
  took more than that many times the fastest first block is not timed again:
  its one sample stands, and the time goes to the contenders that can win;
- the VM sometimes snaps multi-threaded calls to multiples of its 4 ms tick for
  seconds at a time: when the reference calls' samples disagree by more than
  :data:`SLOW_PHASE_RATIO`, everything is measured again, and the calmest
  attempt is kept (and flagged if none was calm).

This module is part of the numpy layer: torch is never imported here unless a
caller asks :func:`thread_limits` to limit it.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable

SLOW_PHASE_RATIO = 1.35


@contextlib.contextmanager
def blas_thread_limit(threads: int) -> Iterator[None]:
    """Give numpy's BLAS ``threads`` threads inside the block (restored after); without
    threadpoolctl it keeps its own setting."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield


@contextlib.contextmanager
def thread_limits(threads: int, *, include_torch: bool = False) -> Iterator[None]:
    """Give numpy's BLAS and torch ``threads`` threads inside the block (restored after).

    torch is limited when it is already imported, or imported here when
    ``include_torch`` (for callers that build torch contenders inside the block).
    Without threadpoolctl numpy's BLAS keeps its own setting.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(blas_thread_limit(threads))
        if include_torch:
            import torch  # noqa: F401  (registers itself in sys.modules)
        torch_module = sys.modules.get("torch")
        if torch_module is not None:
            stack.callback(torch_module.set_num_threads, torch_module.get_num_threads())
            torch_module.set_num_threads(threads)
        yield


@dataclass(frozen=True)
class Timing:
    """Seconds per call: one sample per round, each the mean of a block of calls."""

    samples: tuple[float, ...]
    calls_per_sample: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def quartiles(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3

    @property
    def spread(self) -> float:
        """max / min of the samples (1.0 = perfectly steady)."""
        if min(self.samples) > 0:
            return max(self.samples) / min(self.samples)
        return 1.0 if max(self.samples) == 0 else math.inf


def openblas_spin_seconds() -> float:
    """How long OpenBLAS's idle worker threads may keep spinning after a call.

    Its pthreads builds (numpy's and scipy's wheels) spin 2**OPENBLAS_THREAD_TIMEOUT
    cycles (default 28, clamped to 4-30) before they sleep: about 130 ms measured
    on Zen 3, a whole core each. On 2 cores, a sparse product timed in that window
    ran 2x slower (13x for its first block), so timings that interleave an
    OpenBLAS contender with others pause this long after it. Counted at 1.5 GHz,
    a slow clock, so the pause outlasts the spin.
    """
    try:
        exponent = int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "28"))
    except ValueError:
        exponent = 28
    return 2.0 ** min(30, max(4, exponent)) / 1.5e9


@dataclass(frozen=True)
class TimingSettings:
    """How hard to measure. ``rounds`` is the number of samples per call.

    A block lasts about ``target_block_s`` and holds at least ``min_calls`` and
    at most ``max_calls`` calls, unless ``calls_per_block`` fixes its size.
    """

    rounds: int = 5
    target_block_s: float = 0.01
    max_calls: int = 50
    sleep_s: float = 0.003  # pause before each block
    max_remeasure: int = 1  # extra attempts when the references are unsteady
    skip_warmup_above_s: float = 0.02  # calls this long need no warm-up call
    max_contender_s: float = math.inf  # rough time budget per call per attempt
    calls_per_block: int | None = None
    min_calls: int = 1
    # Names whose block is followed by a pause of settle_s, for a runtime whose
    # worker threads keep spinning after a call (see openblas_spin_seconds).
    settle_after: tuple[str, ...] = ()
    settle_s: float = 0.0
    # After the first round, stop timing non-reference calls slower than this
    # many times the round's fastest call (math.inf: time every call fully).
    drop_slower_than: float = math.inf

    def __post_init__(self) -> None:
        if (
            self.rounds < 1
            or self.min_calls < 1
            or self.max_calls < self.min_calls
            or self.max_remeasure < 0
            or (self.calls_per_block is not None and self.calls_per_block < 1)
            or not self.drop_slower_than >= 1.0
        ):
            raise ValueError(f"invalid timing settings {self}")


@dataclass(frozen=True)
class PointTimings:
    timings: dict[str, Timing]
    remeasured: int  # extra attempts made
    steady: bool  # the kept attempt's references were within SLOW_PHASE_RATIO


def _calls_for(seconds_per_call: float, settings: TimingSettings) -> int:
    if settings.calls_per_block is not None:
        return settings.calls_per_block
    if seconds_per_call <= 0:
        return settings.max_calls
    calls = math.ceil(settings.target_block_s / seconds_per_call)
    return max(settings.min_calls, min(settings.max_calls, calls))


def _time_block(call: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


@dataclass
class _Plan:
    """How one call is measured, fixed from its first call."""

    calls: int
    rounds: int
    warm_up: bool


def _plan_for(seconds_per_call: float, settings: TimingSettings) -> _Plan:
    calls = _calls_for(seconds_per_call, settings)
    warm_up = seconds_per_call < settings.skip_warmup_above_s
    cost_per_round = seconds_per_call * (calls + warm_up)
    rounds = settings.rounds
    if cost_per_round > 0 and settings.max_contender_s < rounds * cost_per_round:
        rounds = max(1, math.floor(settings.max_contender_s / cost_per_round))
    return _Plan(calls, rounds, warm_up)


def _awake_seconds_per_call(call: Callable[[], Any], settings: TimingSettings) -> float:
    """Seconds per call once the thread pools are awake, from a short probe.

    The first call after the sleep pays the pools' wake-up: a 100 us call sized
    from it alone got blocks of 7-42 calls (3-5 ms, not ``target_block_s``), whose
    first slow calls then weighed on every sample. So a short call is sized from
    the mean of the calls that follow it, within a tenth of ``target_block_s``.
    """
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    if first >= settings.skip_warmup_above_s or settings.calls_per_block is not None:
        return first
    probe_s = settings.target_block_s / 10
    calls = 0
    start = time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= probe_s or calls >= settings.max_calls:
            return elapsed / calls


def _one_attempt(
    calls: Mapping[str, Callable[[], Any]], settings: TimingSettings, plans: dict[str, _Plan],
    keep: Callable[[dict[str, float]], set[str]] | None = None,
) -> dict[str, Timing]:
    """One sample per call and round. After the first round, ``keep`` (given each
    call's first sample, or the seconds per call its warm-up measured where faster)
    names the calls timed in the later rounds."""
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    # Seconds per call each first visit's warm-up measured before its first block.
    probed: dict[str, float] = {}
    for round_index in range(settings.rounds):
        if round_index == 1 and keep is not None:
            # The faster of a call's first block and its warm-up probe decides: one slow
            # block (a 6.6 ms stall in the first block of a 20 us CSR call, in 1 of 5
            # fresh processes) dropped the planner's fastest contender for good.
            kept = keep({name: min(samples[name][0], probed.get(name, math.inf))
                         for name in names})
            names = [name for name in names if name in kept]
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            plan = plans.get(name)
            if plan is not None and len(samples[name]) >= plan.rounds:
                continue
            time.sleep(settings.sleep_s)
            call = calls[name]
            if plan is None:  # first visit: warm-up calls that also size the blocks
                probed[name] = _awake_seconds_per_call(call, settings)
                plan = plans[name] = _plan_for(probed[name], settings)
            elif plan.warm_up:
                call()
            samples[name].append(_time_block(call, plan.calls))
            if name in settings.settle_after:
                time.sleep(settings.settle_s)
    return {name: Timing(tuple(times), plans[name].calls) for name, times in samples.items()}


def _contenders_left(first_samples: dict[str, float], reference_names: list[str],
                     ratio: float) -> set[str]:
    """The calls worth more rounds: the references, and every call within ``ratio`` of
    the fastest first sample."""
    fastest = min(first_samples.values())
    if fastest <= 0:
        return set(first_samples)
    return {name for name, seconds in first_samples.items()
            if name in reference_names or seconds <= ratio * fastest}


def measure(
    calls: Mapping[str, Callable[[], Any]],
    reference_names: list[str],
    settings: TimingSettings,
    first_call_s: Mapping[str, float] | None = None,
) -> PointTimings:
    """Time ``calls`` interleaved; measure again while the references are unsteady.

    ``first_call_s`` may give each call's duration of an earlier call (an output
    check). For a long call that sizes its blocks and saves an extra call; a
    short first call is dominated by cold-start costs (thread creation, page
    faults), so short ones are sized by a warm-up call as usual.
    """
    if not calls:
        return PointTimings({}, 0, True)
    plans = {
        name: _plan_for(seconds, settings)
        for name, seconds in (first_call_s or {}).items()
        if name in calls and seconds >= settings.skip_warmup_above_s
    }

    def keep(first_samples: dict[str, float]) -> set[str]:
        return _contenders_left(first_samples, reference_names, settings.drop_slower_than)

    finite = settings.drop_slower_than < math.inf
    best = _one_attempt(calls, settings, plans, keep if finite else None)
    best_spread = _reference_spread(best, reference_names)
    remeasured = 0
    # Each attempt times every call afresh, its drops included: a call dropped after
    # the first round keeps that one sample, and an unsteady attempt's first round
    # (one slow block) must not decide for good. Reusing the dropped samples, a
    # planner's fastest contender (CSR for a 90%-sparse 768x3072 weight at 128 rows,
    # about 0.5 ms) was dropped on one 2.2 ms block in 1 of 3 fresh processes and
    # a format twice as slow was chosen.
    while best_spread > SLOW_PHASE_RATIO and remeasured < settings.max_remeasure:
        remeasured += 1
        timings = _one_attempt(calls, settings, plans, keep if finite else None)
        spread = _reference_spread(timings, reference_names)
        if spread < best_spread:
            best, best_spread = timings, spread
    return PointTimings(best, remeasured, best_spread <= SLOW_PHASE_RATIO)


def _reference_spread(timings: dict[str, Timing], reference_names: list[str]) -> float:
    return max((timings[name].spread for name in reference_names if name in timings), default=1.0)


def median_seconds(call: Callable[[], Any], repeats: int = 7) -> float:
    """Median seconds of ``repeats`` single calls of ``call``, after one warm-up call."""
    settings = TimingSettings(
        rounds=repeats, calls_per_block=1, sleep_s=0.0, max_remeasure=0, skip_warmup_above_s=0.0
    )
    return measure({"call": call}, [], settings).timings["call"].median


# ---------------------------------------------------------------- cold timing
# A weight small enough to stay in the last-level cache across calls flatters
# sparse formats at small batches, where the product streams the weight from
# memory (BENCHMARKING.md). The planner and the benchmark time such batches
# cold: each timed call reads the next of several copies of the operand.

#: Batches up to this are timed cold by default.
COLD_MAX_BATCH = 16
#: A cold run's copies of an operand together hold at least this many times the
#: last-level cache.
COLD_CACHE_MULTIPLE = 2
#: ... and there are at least this many, so back-to-back calls never read the same
#: copy: one operand just past the multiple was still partly cache-resident between
#: calls (Zen 4, 32 MiB L3, numpy GEMV on one 64 MiB 4096 x 4096 weight: 32.5-35.2
#: GB/s against 29.3-31.9 over two or three copies, in-process, three runs; one
#: benchmark run read it at 49.9 GB/s, past what DRAM delivers).
MIN_COLD_COPIES = 2
#: Assumed when neither sysfs nor sysconf says how big the last-level cache is
#: (the 32 MB L3 of the machine BENCHMARKING.md describes).
FALLBACK_LLC_BYTES = 32 * 2**20


def _parse_cache_size(text: str) -> int:
    """sysfs cache sizes look like ``32768K`` or ``1M``."""
    text = text.strip().upper()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def last_level_cache_bytes(sysfs: str = "/sys/devices/system/cpu/cpu0/cache") -> tuple[int, str]:
    """The size of the largest cache level of CPU 0, and where the figure came from.

    Reads sysfs (Linux), then ``os.sysconf``, else assumes :data:`FALLBACK_LLC_BYTES`.
    """
    sizes = []
    try:
        for entry in sorted(os.listdir(sysfs)):
            if entry.startswith("index"):
                with open(os.path.join(sysfs, entry, "level"), encoding="utf-8") as handle:
                    level = int(handle.read())
                with open(os.path.join(sysfs, entry, "size"), encoding="utf-8") as handle:
                    sizes.append((level, _parse_cache_size(handle.read())))
    except (OSError, ValueError):
        sizes = []
    if sizes:
        return max(sizes)[1], f"sysfs L{max(sizes)[0]}"
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            size = os.sysconf(name)
        except (ValueError, OSError, AttributeError):
            continue
        if size and size > 0:
            return int(size), f"sysconf {name}"
    return FALLBACK_LLC_BYTES, "fallback (size unknown)"


def cold_copies(nbytes: int, llc_bytes: int, max_copies: int) -> int:
    """How many copies of an ``nbytes`` operand a cold run rotates through: together at
    least :data:`COLD_CACHE_MULTIPLE` times ``llc_bytes`` and at least
    :data:`MIN_COLD_COPIES`, at most ``max_copies``, and one for an empty operand."""
    if nbytes <= 0:
        return 1
    needed = max(MIN_COLD_COPIES, -(-COLD_CACHE_MULTIPLE * llc_bytes // nbytes))
    return max(1, min(max_copies, needed))
