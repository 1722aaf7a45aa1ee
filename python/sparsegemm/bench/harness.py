"""Timing harness: check each contender's answer, then time them interleaved.

Every contender's output is compared with a float64 dense product first; a
wrong contender is reported, never timed. The timing itself is
:func:`sparsegemm.timing.measure`, the loop the planner and ``sparsify`` use too
(its docstring says how it measures); the dense references are the calls whose
steadiness decides whether a point is measured again.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..timing import SLOW_PHASE_RATIO, PointTimings, Timing, measure
from ..timing import TimingSettings as HarnessSettings
from .contenders import as_numpy

__all__ = [
    "SLOW_PHASE_RATIO",
    "HarnessSettings",
    "PointTimings",
    "Timing",
    "WrongResult",
    "check_approximate",
    "check_output",
    "measure",
    "tolerance",
]


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


def check_approximate(result: Any, reference: np.ndarray, allowed: float) -> float:
    """The relative Frobenius error of a quantized ``result``; raises :class:`WrongResult`
    above ``allowed`` (int8 and bf16 results differ from the float product by design)."""
    actual = as_numpy(result)
    if actual.shape != reference.shape:
        raise WrongResult(f"shape {actual.shape}, expected {reference.shape}")
    scale = max(float(np.linalg.norm(reference)), np.finfo(np.float64).tiny)
    with np.errstate(invalid="ignore", over="ignore"):
        error = float(np.linalg.norm(actual.astype(np.float64) - reference)) / scale
    if not error <= allowed:
        raise WrongResult(f"relative Frobenius error {error:.3g} exceeds {allowed:.3g}")
    return error
