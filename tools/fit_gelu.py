"""Fit the rational approximation of Phi that the float32 GELU kernels use.

Phi(x) = 0.5 + s P(s^2) / Q(s^2) for s = x clamped to [-CLAMP, CLAMP], P and Q
of degree 5 with Q(0) = 1. The fit is a linearised weighted least-squares
(Sanathanan-Koerner iterations, then Lawson reweighting towards minimax) of the
absolute error of Phi against float64 erf. It prints the float32 coefficients
for csrc/kernels/activation/activation_kernels.inl and the worst error of GELU
evaluated in float32 on a fine grid, relative to the tests' tolerance.

    python tools/fit_gelu.py
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf, erfc

CLAMP = 5.3
DEGREES = (5, 5)
ITERATIONS = 60


def fit(clamp: float = CLAMP, degrees: tuple[int, int] = DEGREES) -> tuple[np.ndarray, np.ndarray]:
    p, q = degrees
    s = clamp * (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, 4000)))[1:]  # dense at the ends
    t = s * s
    target = 0.5 * erf(s / np.sqrt(2.0)) / s
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


def gelu_float32(x: np.ndarray, num: np.ndarray, den: np.ndarray, clamp: float) -> np.ndarray:
    """The kernel's evaluation order in float32 (an FMA rounds once)."""
    f32 = np.float32
    s = np.clip(x, f32(-clamp), f32(clamp)).astype(f32)
    t = (s * s).astype(f32)

    def horner(coefficients: np.ndarray) -> np.ndarray:
        acc = np.full_like(t, f32(coefficients[-1]))
        for c in coefficients[-2::-1]:
            acc = (acc.astype(np.float64) * t + np.float64(f32(c))).astype(f32)
        return acc

    ratio = (horner(num) / horner(den)).astype(f32)
    phi = (s.astype(np.float64) * ratio + 0.5).astype(f32)
    return (x * np.where(x > f32(-clamp), phi, f32(0.0))).astype(f32)


def main() -> None:
    num, den = fit()
    print("P:", ", ".join(f"{float(np.float32(c))!r}f" for c in num))
    print("Q:", ", ".join(f"{float(np.float32(c))!r}f" for c in den))
    x = np.linspace(-12.0, 12.0, 4_000_001).astype(np.float32)
    x64 = x.astype(np.float64)
    expected = 0.5 * x64 * erfc(-x64 / np.sqrt(2.0))
    error = np.abs(gelu_float32(x, num, den, CLAMP) - expected)
    ratio = error / (1e-6 + 4e-7 * np.abs(expected))
    print(f"max |error| {error.max():.2e}; worst error / test tolerance {ratio.max():.3f} "
          f"at x = {x[np.argmax(ratio)]}")


if __name__ == "__main__":
    main()
