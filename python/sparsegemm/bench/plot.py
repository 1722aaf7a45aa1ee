"""The crossover plot: speedup over dense against sparsity, one panel per shape and pattern."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .analysis import headline_rows

_SPEEDUP_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50)


def _best_peer_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    best: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        if row["status"] != "ok" or row["kind"] != "sparse" or row["is_sparsegemm"]:
            continue
        key = (
            row["out_features"],
            row["in_features"],
            row["pattern"],
            row["batch"],
            row["sparsity"],
        )
        if key not in best or row["speedup"] > best[key]["speedup"]:
            best[key] = row
    return list(best.values())


def crossover_plot(
    path: str, rows: Sequence[dict[str, Any]], table: Sequence[dict[str, Any]], title: str
) -> bool:
    """Write the PNG; returns False (writing nothing) when matplotlib is missing.

    Solid lines: sparsegemm's headline contender per batch (the planner's choice
    when it ran; points it kept dense are left out); dashed: the fastest other
    sparse library. Circles on the 1x line mark break-even sparsities.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return False
    ours = headline_rows(rows)
    peers = _best_peer_rows(rows)
    panels = list(
        dict.fromkeys((r["out_features"], r["in_features"], r["pattern"]) for r in ours + peers)
    )
    if not panels:
        return False
    batches = sorted({r["batch"] for r in ours + peers})
    colors = plt.get_cmap("viridis")
    columns = min(3, len(panels))
    figure_rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(
        figure_rows, columns, figsize=(5.2 * columns, 4.0 * figure_rows), squeeze=False
    )
    for axis, (m, k, pattern) in zip(axes.flat, panels):
        for index, batch in enumerate(batches):
            color = colors(index / max(1, len(batches) - 1) * 0.9)
            for series, style, label in ((ours, "-", f"batch {batch}"), (peers, "--", None)):
                points = sorted(
                    (r["sparsity"], r["speedup"])
                    for r in series
                    if (r["out_features"], r["in_features"], r["pattern"], r["batch"])
                    == (m, k, pattern, batch)
                    and r["speedup"] == r["speedup"]
                )
                if points:
                    axis.plot(*zip(*points), style, marker=".", color=color, label=label)
            for entry in table:
                if (
                    entry["out_features"],
                    entry["in_features"],
                    entry["pattern"],
                    entry["batch"],
                    entry["headline"],
                ) == (m, k, pattern, batch, True) and isinstance(
                    entry["break_even_sparsity"], float
                ):
                    axis.plot(
                        entry["break_even_sparsity"],
                        1.0,
                        "o",
                        color=color,
                        markersize=8,
                        markerfacecolor="none",
                    )
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_yscale("log")
        axis.yaxis.set_major_locator(ticker.FixedLocator(_SPEEDUP_TICKS))
        axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}x"))
        axis.yaxis.set_minor_formatter(ticker.NullFormatter())
        axis.set_title(f"{m}x{k} ({pattern})")
        axis.set_xlabel("sparsity")
        axis.set_ylabel("speedup over dense")
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(
                fontsize="small",
                title="solid: sparsegemm (planned)\ndashed: best peer",
                title_fontsize="small",
            )
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
