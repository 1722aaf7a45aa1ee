"""Timing harness: check each contender's answer, then time them interleaved.

How a point is measured (see BENCHMARKING.md for why):

- every contender's output is compared with a float64 dense product first;
  a wrong contender is reported, never timed;
- the contenders run in rounds inside one process; in each round each contender
  sleeps a few milliseconds (so other runtimes' idle pools stop spinning), makes
  one warm-up call, then times a block of calls; the block's mean per call is one
  sample, and the round order rotates so no contender always goes first;
- a contender's figure is the median of its samples, with quartiles and min/max;
- a slow contender (calls of many milliseconds) skips the warm-up, which only
  matters for waking thread pools, and a contender whose samples would overrun
  ``max_contender_s`` takes fewer samples (its ``samples`` count shows it);
- the VM sometimes snaps multi-threaded calls to multiples of its 4 ms tick for
  seconds at a time: when the dense reference's samples disagree by more than
  :data:`SLOW_PHASE_RATIO`, the whole point is measured again, and the calmest
  attempt is kept (and flagged if none was calm).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .contenders import as_numpy

SLOW_PHASE_RATIO = 1.35


class WrongResult(Exception):
    """A contender's output differs from the dense reference beyond tolerance."""


def tolerance(dtype: np.dtype, inner_dim: int) -> float:
    """Allowed error relative to the output's largest magnitude.

    1e-3 for float32 (1e-9 for float64) at K = 1024, growing with sqrt(K) like the
    rounding error of a K-term sum.
    """
    base = 1e-3 if np.dtype(dtype).itemsize <= 4 else 1e-9
    return base * math.sqrt(max(1.0, inner_dim / 1024))


def check_output(result: Any, reference: np.ndarray, inner_dim: int) -> float:
    """The error of ``result`` relative to max |reference|; raises :class:`WrongResult`."""
    actual = as_numpy(result)
    if actual.shape != reference.shape:
        raise WrongResult(f"shape {actual.shape}, expected {reference.shape}")
    scale = max(float(np.max(np.abs(reference), initial=0.0)), np.finfo(np.float64).tiny)
    with np.errstate(invalid="ignore", over="ignore"):
        error = float(np.max(np.abs(actual.astype(np.float64) - reference), initial=0.0)) / scale
    allowed = tolerance(actual.dtype, inner_dim)
    if not error <= allowed:  # also catches NaN
        raise WrongResult(f"max error {error:.3g} of max |y| exceeds {allowed:.3g}")
    return error


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


@dataclass(frozen=True)
class HarnessSettings:
    """How hard to measure. ``rounds`` is the number of samples per contender."""

    rounds: int = 5
    target_block_s: float = 0.01  # each timed block lasts about this long
    max_calls: int = 50  # ...but never more calls than this
    sleep_s: float = 0.003  # pause before each contender's block
    max_remeasure: int = 1  # extra attempts when the dense reference is unsteady
    skip_warmup_above_s: float = 0.02  # calls this long need no warm-up call
    max_contender_s: float = math.inf  # rough time budget per contender per attempt

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.max_calls < 1 or self.max_remeasure < 0:
            raise ValueError(f"invalid harness settings {self}")


@dataclass(frozen=True)
class PointTimings:
    timings: dict[str, Timing]
    remeasured: int  # extra attempts made
    steady: bool  # the kept attempt's dense reference was within SLOW_PHASE_RATIO


def _calls_for(seconds_per_call: float, settings: HarnessSettings) -> int:
    if seconds_per_call <= 0:
        return settings.max_calls
    return max(1, min(settings.max_calls, math.ceil(settings.target_block_s / seconds_per_call)))


def _time_block(call: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


@dataclass
class _Plan:
    """How one contender is measured, fixed from its first call."""

    calls: int
    rounds: int
    warm_up: bool


def _plan_for(seconds_per_call: float, settings: HarnessSettings) -> _Plan:
    calls = _calls_for(seconds_per_call, settings)
    warm_up = seconds_per_call < settings.skip_warmup_above_s
    cost_per_round = seconds_per_call * (calls + warm_up)
    rounds = settings.rounds
    if cost_per_round > 0 and settings.max_contender_s < rounds * cost_per_round:
        rounds = max(1, math.floor(settings.max_contender_s / cost_per_round))
    return _Plan(calls, rounds, warm_up)


def _one_attempt(
    calls: Mapping[str, Callable[[], Any]], settings: HarnessSettings, plans: dict[str, _Plan]
) -> dict[str, Timing]:
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(settings.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            plan = plans.get(name)
            if plan is not None and len(samples[name]) >= plan.rounds:
                continue
            time.sleep(settings.sleep_s)
            call = calls[name]
            if plan is None:  # first visit: a warm-up call that also sizes the blocks
                warm_start = time.perf_counter()
                call()
                plan = plans[name] = _plan_for(time.perf_counter() - warm_start, settings)
            elif plan.warm_up:
                call()
            samples[name].append(_time_block(call, plan.calls))
    return {name: Timing(tuple(samples[name]), plans[name].calls) for name in names}


def measure(
    calls: Mapping[str, Callable[[], Any]],
    reference_names: list[str],
    settings: HarnessSettings,
    first_call_s: Mapping[str, float] | None = None,
) -> PointTimings:
    """Time ``calls`` interleaved; re-measure while the references are unsteady.

    ``first_call_s`` may give each contender's duration of an earlier call (the
    output check). For a long call that sizes its blocks and saves an extra call;
    a short first call is dominated by cold-start costs (thread creation, page
    faults), so short ones are sized by a warm-up call as usual.
    """
    if not calls:
        return PointTimings({}, 0, True)
    plans = {
        name: _plan_for(seconds, settings)
        for name, seconds in (first_call_s or {}).items()
        if name in calls and seconds >= settings.skip_warmup_above_s
    }
    best = _one_attempt(calls, settings, plans)
    best_spread = _reference_spread(best, reference_names)
    remeasured = 0
    while best_spread > SLOW_PHASE_RATIO and remeasured < settings.max_remeasure:
        remeasured += 1
        timings = _one_attempt(calls, settings, plans)
        spread = _reference_spread(timings, reference_names)
        if spread < best_spread:
            best, best_spread = timings, spread
    return PointTimings(best, remeasured, best_spread <= SLOW_PHASE_RATIO)


def _reference_spread(timings: dict[str, Timing], reference_names: list[str]) -> float:
    return max((timings[name].spread for name in reference_names if name in timings), default=1.0)
