"""Sensitivity analysis: metric (e.g. accuracy) against sparsity, one layer at a time.

For each layer and each sparsity, a copy of the model has only that layer
pruned (one-shot, no fine-tuning) and is scored with the user's ``eval_fn``.
Layers whose metric falls fast deserve lower amounts (see ``overrides`` in
:func:`~sparsegemm.prune.prune_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Optional

from torch import nn

from .api import clone_model, prunable_layers, prune_model

__all__ = ["sensitivity_analysis", "format_table", "plot_sensitivity"]

DEFAULT_SPARSITIES = (0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 0.95)


def sensitivity_analysis(
    model: nn.Module,
    eval_fn: Callable[[nn.Module], float],
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    criterion="l1",
    *,
    layers: Optional[Sequence[str]] = None,
    skip_first_last: bool = False,
    name: str = "weight",
) -> list[dict[str, object]]:
    """Return rows ``{"layer", "sparsity", "metric"}`` for every layer x sparsity.

    ``eval_fn(model) -> float`` evaluates a model (higher = better, e.g.
    accuracy).  ``layers`` defaults to every prunable layer (including first
    and last: it is an analysis, not a decision).  The model itself is not
    modified.  Rows come layer-major in ``sparsities`` order; render them with
    :func:`format_table` or :func:`plot_sensitivity`.
    """
    all_layers = prunable_layers(model, skip_first_last=skip_first_last, name=name)
    if layers is None:
        layers = list(all_layers)
    unknown = [n for n in layers if n not in dict(model.named_modules())]
    if unknown:
        raise KeyError(f"unknown layers: {unknown}")
    rows: list[dict[str, object]] = []
    for lname in layers:
        for s in sparsities:
            trial = clone_model(model)
            prune_model(
                trial,
                0.0,
                criterion,
                overrides={lname: float(s)},
                filter_fn=lambda m, n: False,
                skip_first_last=False,
                name=name,
            )
            rows.append({"layer": lname, "sparsity": float(s), "metric": float(eval_fn(trial))})
    return rows


def format_table(rows: list[dict[str, object]], metric_name: str = "metric") -> str:
    """Pretty table: one line per layer, one column per sparsity."""
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    sps = sorted({r["sparsity"] for r in rows})
    val = {(r["layer"], r["sparsity"]): r["metric"] for r in rows}
    w = max([len("layer")] + [len(str(n)) for n in layers])
    head = f"{'layer':<{w}} | " + " ".join(f"{s:>7.0%}" for s in sps)
    lines = [f"{metric_name} vs sparsity", head, "-" * len(head)]
    for n in layers:
        cells = " ".join(f"{val[(n, s)]:>7.4f}" if (n, s) in val else f"{'':>7}" for s in sps)
        lines.append(f"{str(n):<{w}} | {cells}")
    return "\n".join(lines)


def plot_sensitivity(rows: list[dict[str, object]], path: str, metric_name: str = "metric") -> str:
    """Write a PNG line plot (one line per layer) to ``path``; needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for n in dict.fromkeys(r["layer"] for r in rows):
        pts = sorted((r["sparsity"], r["metric"]) for r in rows if r["layer"] == n)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=str(n))
    ax.set_xlabel("sparsity of the layer")
    ax.set_ylabel(metric_name)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
