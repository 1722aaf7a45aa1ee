"""``sparsegemm bench --compare old.json new.json``: what changed between two runs."""

from __future__ import annotations

import math
from typing import Any

from .analysis import format_break_even
from .results import load_json

#: Speedup changes smaller than this (relative) are within run-to-run noise here.
NOISE = 0.15

_ROW_KEY = (
    "out_features",
    "in_features",
    "batch",
    "sparsity",
    "pattern",
    "dtype",
    "threads",
    "contender",
)
_BREAK_EVEN_KEY = ("out_features", "in_features", "pattern", "batch", "contender")
_METADATA_FACTS = (
    ("cpu_model",),
    ("threads",),
    ("numpy",),
    ("scipy",),
    ("torch", "version"),
    ("sparsegemm", "version"),
    ("sparsegemm", "isa"),
)


def _lookup(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = document
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _break_even_moved(old: float | str, new: float | str) -> bool:
    """True when a break-even changed category or moved by more than 0.02 sparsity."""
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return abs(old - new) > 0.02
    return old != new


def compare_documents(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Matched rows with their speedup change, unmatched rows, changed metadata and break-evens."""
    old_rows = {tuple(r[k] for k in _ROW_KEY): r for r in old["results"] if r["status"] == "ok"}
    new_rows = {tuple(r[k] for k in _ROW_KEY): r for r in new["results"] if r["status"] == "ok"}
    changes = []
    for key in old_rows.keys() & new_rows.keys():
        before, after = old_rows[key]["speedup"], new_rows[key]["speedup"]
        ratio = after / before if before and not math.isnan(before) else math.nan
        changes.append(
            {
                **dict(zip(_ROW_KEY, key)),
                "old_speedup": before,
                "new_speedup": after,
                "old_time_s": old_rows[key]["time_median_s"],
                "new_time_s": new_rows[key]["time_median_s"],
                "ratio": ratio,
                "significant": not math.isnan(ratio) and abs(ratio - 1.0) > NOISE,
            }
        )
    changes.sort(key=lambda c: tuple(c[k] for k in _ROW_KEY))
    old_be = {tuple(e[k] for k in _BREAK_EVEN_KEY): e for e in old.get("break_even", [])}
    new_be = {tuple(e[k] for k in _BREAK_EVEN_KEY): e for e in new.get("break_even", [])}
    break_even_changes = [
        {
            **dict(zip(_BREAK_EVEN_KEY, key)),
            "old": old_be[key]["break_even_sparsity"],
            "new": new_be[key]["break_even_sparsity"],
        }
        for key in sorted(old_be.keys() & new_be.keys(), key=str)
        if _break_even_moved(old_be[key]["break_even_sparsity"], new_be[key]["break_even_sparsity"])
    ]
    metadata = [
        (".".join(path), _lookup(old["metadata"], path), _lookup(new["metadata"], path))
        for path in _METADATA_FACTS
    ]
    return {
        "changes": changes,
        "only_old": sorted(old_rows.keys() - new_rows.keys(), key=str),
        "only_new": sorted(new_rows.keys() - old_rows.keys(), key=str),
        "break_even": break_even_changes,
        "metadata": [m for m in metadata if m[1] != m[2]],
    }


def compare_files(old_path: str, new_path: str) -> str:
    """The comparison of two results JSONs as text."""
    result = compare_documents(load_json(old_path), load_json(new_path))
    lines = [f"comparing {old_path} (old) with {new_path} (new)"]
    for name, before, after in result["metadata"]:
        lines.append(f"  {name}: {before} -> {after}")
    if result["metadata"]:
        lines.append("  (different machines or versions: compare ratios with care)")
    significant = [c for c in result["changes"] if c["significant"]]
    lines.append(
        f"\n{len(result['changes'])} matching results; {len(significant)} speedups changed "
        f"by more than {NOISE:.0%} (noise on a shared VM is about that much):"
    )
    for c in significant:
        lines.append(
            f"  {c['out_features']}x{c['in_features']} b={c['batch']} s={c['sparsity']:g} "
            f"{c['pattern']} {c['contender']}: {c['old_speedup']:.2f}x -> {c['new_speedup']:.2f}x "
            f"({c['ratio']:.2f}, time {c['old_time_s'] * 1e3:.3f} -> "
            f"{c['new_time_s'] * 1e3:.3f} ms)"
        )
    if result["break_even"]:
        lines.append("\nbreak-even sparsity changes:")
        for e in result["break_even"]:
            lines.append(
                f"  {e['out_features']}x{e['in_features']} {e['pattern']} b={e['batch']} "
                f"{e['contender']}: {format_break_even(e['old'])} -> "
                f"{format_break_even(e['new'])}"
            )
    for label, keys in (("only in old", result["only_old"]), ("only in new", result["only_new"])):
        if keys:
            lines.append(f"\n{len(keys)} results {label}, e.g. {dict(zip(_ROW_KEY, keys[0]))}")
    return "\n".join(lines)
