"""Fit the rational approximations the float32 GELU kernels use.

Both GELU forms are x F(v) for a CDF F of an argument v(x): the erf form has
F = Phi (the normal CDF) and v = x, the tanh form the logistic function and
v = 2 sqrt(2 / pi) (x + 0.044715 x^3). The kernels evaluate F(v) = 0.5 + s
P(s^2) / Q(s^2) for s = v clamped to [-clamp, clamp], Q(0) = 1. The fit is a
linearised weighted least-squares (Sanathanan-Koerner iterations, then Lawson
reweighting towards minimax) of the absolute error of F against float64. It
prints the float32 coefficients for csrc/kernels/activation/activation_kernels.inl
and the worst error of GELU evaluated in float32 on a fine grid, relative to
the tests' tolerance.

    python tools/fit_gelu.py erf
    python tools/fit_gelu.py tanh
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.special import erf, erfc

ITERATIONS = 60
TANH_ARGUMENT = 2.0 * np.sqrt(2.0 / np.pi)  # v = TANH_ARGUMENT * (x + 0.044715 x^3)
# form: (clamp, degrees of P and Q, (F(s) - 0.5) / s in float64)
FORMS = {
    "erf": (5.3, (5, 5), lambda s: 0.5 * erf(s / np.sqrt(2.0)) / s),
    "tanh": (17.0, (4, 4), lambda s: 0.5 * np.tanh(0.5 * s) / s),
}


def fit(form: str) -> tuple[np.ndarray, np.ndarray]:
    clamp, (p, q), centred = FORMS[form]
    s = clamp * (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, 4000)))[1:]  # dense at the ends
    t = s * s
    target = centred(s)
    weights, q_previous = np.ones_like(s), np.ones_like(s)
    best = (np.inf, None, None)
    for iteration in range(ITERATIONS):
        # s (P - target Q) / Q_previous, linear in the coefficients (Q's constant is 1).
        design = np.hstack([np.vander(t, p + 1, increasing=True),
                            -target[:, None] * np.vander(t, q + 1, increasing=True)[:, 1:]])
        scale = (weights * s / q_previous)[:, None]
        coef, *_ = np.linalg.lstsq(design * scale, target * scale[:, 0], rcond=None)
        num, den = coef[:p + 1], np.concatenate([[1.0], coef[p + 1:]])
        q_previous = np.polyval(den[::-1], t)
        error = s * (np.polyval(num[::-1], t) / q_previous - target)
        worst = np.abs(error).max()
        if worst < best[0]:
            best = (worst, num, den)
        if iteration > 5:
            weights = weights * np.sqrt(np.abs(error) / worst + 0.05)
            weights /= weights.mean()
    return best[1], best[2]


def gelu_float32(x: np.ndarray, num: np.ndarray, den: np.ndarray, form: str) -> np.ndarray:
    """The kernel's evaluation order in float32 (an FMA rounds once)."""
    f32 = np.float32
    clamp = FORMS[form][0]
    v = x
    if form == "tanh":
        c1, c3 = f32(TANH_ARGUMENT), f32(TANH_ARGUMENT * 0.044715)
        inner = (np.float64(c3) * (x * x).astype(f32) + np.float64(c1)).astype(f32)
        v = (x * inner).astype(f32)
    s = np.clip(v, f32(-clamp), f32(clamp)).astype(f32)
    t = (s * s).astype(f32)

    def horner(coefficients: np.ndarray) -> np.ndarray:
        acc = np.full_like(t, f32(coefficients[-1]))
        for c in coefficients[-2::-1]:
            acc = (acc.astype(np.float64) * t + np.float64(f32(c))).astype(f32)
        return acc

    ratio = (horner(num) / horner(den)).astype(f32)
    phi = (s.astype(np.float64) * ratio + 0.5).astype(f32)
    return (x * np.where(v > f32(-clamp), phi, f32(0.0))).astype(f32)


def reference(x: np.ndarray, form: str) -> np.ndarray:
    x64 = x.astype(np.float64)
    if form == "erf":
        return 0.5 * x64 * erfc(-x64 / np.sqrt(2.0))
    return 0.5 * x64 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x64 + 0.044715 * x64**3)))


def main() -> None:
    form = sys.argv[1] if len(sys.argv) > 1 else "erf"
    num, den = fit(form)
    # Highest degree first, the order of the kernel's coefficient arrays.
    print("P:", ", ".join(f"{float(np.float32(c))!r}f" for c in num[::-1]))
    print("Q:", ", ".join(f"{float(np.float32(c))!r}f" for c in den[::-1]))
    x = np.linspace(-12.0, 12.0, 4_000_001).astype(np.float32)
    expected = reference(x, form)
    error = np.abs(gelu_float32(x, num, den, form) - expected)
    ratio = error / (1e-6 + 4e-7 * np.abs(expected))
    print(f"max |error| {error.max():.2e}; worst error / test tolerance {ratio.max():.3f} "
          f"at x = {x[np.argmax(ratio)]}")


if __name__ == "__main__":
    main()
