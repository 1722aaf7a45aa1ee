"""Pruning schedules: one-shot and gradual (AGP, Zhu & Gupta 2017).

AGP (automated gradual pruning) raises sparsity from ``s_i`` to ``s_f`` over
``n`` pruning steps spaced ``dt`` training steps apart, starting at ``t0``::

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3

pruning fast at first, while redundancy is high, and slowly near the end.
Between pruning steps the masks are held fixed while the model fine-tunes:
after every training step the masks are re-applied, so pruned weights stay
exactly zero.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from .api import Amount, apply_masks, prune_model, sparsity

__all__ = ["agp_sparsity", "AGPSchedule", "one_shot", "gradual_prune"]


def agp_sparsity(
    t: float, s_f: float, s_i: float = 0.0, t0: float = 0, n: int = 10, dt: float = 1
) -> float:
    """Target sparsity at step ``t`` of the cubic AGP schedule.

    Clamped to ``s_i`` before ``t0`` and to ``s_f`` after ``t0 + n*dt``.
    """
    if n <= 0 or dt <= 0:
        raise ValueError("need n > 0 and dt > 0")
    if not (0.0 <= s_i <= 1.0 and 0.0 <= s_f <= 1.0):
        raise ValueError("sparsities must be in [0, 1]")
    frac = (t - t0) / (n * dt)
    frac = min(max(frac, 0.0), 1.0)
    return s_f + (s_i - s_f) * (1.0 - frac) ** 3


class AGPSchedule:
    """Stateful AGP pruner to call from your own training loop.

    ``schedule.step(t)`` prunes the model to :func:`agp_sparsity` ``(t)`` when
    ``t`` is a pruning step (``t0, t0+dt, ..., t0+n*dt``), and in every case
    re-applies the masks (so call it after ``optimizer.step()``).  Extra
    keyword arguments go to :func:`~sparsegemm.prune.prune_model`
    (``criterion``, ``scope``, ``overrides``, ``skip_first_last``...).
    """

    def __init__(
        self,
        model: nn.Module,
        final_sparsity: float,
        *,
        initial_sparsity: float = 0.0,
        start_step: int = 0,
        n_steps: int = 10,
        frequency: int = 1,
        **prune_kwargs,
    ):
        self.model = model
        self.s_f, self.s_i = final_sparsity, initial_sparsity
        self.t0, self.n, self.dt = start_step, n_steps, frequency
        self.prune_kwargs = prune_kwargs
        self.history: list[dict[str, float]] = []

    def target(self, t: int) -> float:
        return agp_sparsity(t, self.s_f, self.s_i, self.t0, self.n, self.dt)

    def is_prune_step(self, t: int) -> bool:
        return t >= self.t0 and (t - self.t0) % self.dt == 0 and (t - self.t0) // self.dt <= self.n

    @property
    def end_step(self) -> int:
        return self.t0 + self.n * self.dt

    def step(self, t: int) -> Optional[float]:
        """Prune if ``t`` is a pruning step (returns the target), else just re-apply masks."""
        if self.is_prune_step(t):
            s = self.target(t)
            prune_model(self.model, s, **self.prune_kwargs)
            apply_masks(self.model)
            self.history.append({"step": t, "target": s, "total": sparsity(self.model)["total"]})
            return s
        apply_masks(self.model)
        return None


def one_shot(model: nn.Module, amount: Amount, **prune_kwargs) -> nn.Module:
    """Prune once to ``amount`` (same arguments as :func:`~sparsegemm.prune.prune_model`)."""
    prune_model(model, amount, **prune_kwargs)
    return model


def gradual_prune(
    model: nn.Module,
    train_step: Callable[[int], object],
    final_sparsity: float,
    *,
    n_prune_steps: int = 10,
    steps_between: int = 100,
    finetune_steps: int = 0,
    initial_sparsity: float = 0.0,
    **prune_kwargs,
) -> list[dict[str, float]]:
    """Prune → fine-tune → prune ... with the AGP schedule, over your training step.

    ``train_step(t)`` must do one training step (forward, backward,
    ``optimizer.step()``) of ``model``; its return value is recorded as
    ``"loss"`` if it is a number.  The loop prunes at ``t = 0, dt, ..., n*dt``
    (``dt = steps_between``, ``n = n_prune_steps``) to the AGP target,
    re-applies the masks after every training step (pruned weights stay
    zero), then runs ``finetune_steps`` more steps at the final sparsity.

    Returns a history: one dict per pruning step with ``step``, ``target``
    (the scheduled sparsity, of the pruned units), ``total`` (actual fraction
    of zeros over all prunable layers) and ``loss`` (last train_step value).
    """
    sched = AGPSchedule(
        model,
        final_sparsity,
        initial_sparsity=initial_sparsity,
        start_step=0,
        n_steps=n_prune_steps,
        frequency=steps_between,
        **prune_kwargs,
    )
    total = sched.end_step + finetune_steps
    last_loss = None
    for t in range(total):
        sched.step(t)  # prunes on schedule; re-applies masks otherwise
        out = train_step(t)
        apply_masks(model)
        if isinstance(out, (int, float)) or hasattr(out, "item"):
            last_loss = float(out)
        if sched.history and sched.history[-1]["step"] == t:
            sched.history[-1]["loss"] = last_loss
    if total == sched.end_step:  # no fine-tuning window: make sure the last step happened
        sched.step(sched.end_step)
    return sched.history
