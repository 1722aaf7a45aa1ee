"""What the benchmark multiplies: shapes, pruning patterns, pruned weights and the suites.

A *point* of the grid is one weight shape (out_features x in_features), one batch
(rows of ``x``), one target sparsity and one pruning pattern. Weights are
magnitude-pruned here, with a fixed seed, so every contender sees the same zeros.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .. import pruning

QUICK_SHAPES = ((4096, 4096), (768, 3072))
FULL_SHAPES = ((4096, 4096), (768, 3072), (3072, 768), (768, 768))
DEFAULT_BATCHES = (1, 16, 64, 256)
QUICK_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
FULL_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
#: The block pattern the suites add once sparsegemm has BSR kernels. Square, so
#: torch.sparse BSR (square blocks only on CPU) runs on it too.
DEFAULT_BLOCK_PATTERN = "block:4x4"


@dataclass(frozen=True)
class Pattern:
    """A pruning pattern: ``unstructured`` or ``block:RxC`` (whole RxC blocks pruned)."""

    blocksize: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        if self.blocksize is None:
            return "unstructured"
        return f"block:{self.blocksize[0]}x{self.blocksize[1]}"

    def __str__(self) -> str:
        return self.name


def parse_pattern(text: str) -> Pattern:
    """``"unstructured"`` or ``"block:RxC"`` (e.g. ``block:4x1``) as a :class:`Pattern`."""
    text = text.strip().lower()
    if text == "unstructured":
        return Pattern()
    match = re.fullmatch(r"block:(\d+)x(\d+)", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(
            f"pattern must be 'unstructured' or 'block:RxC' with R, C >= 1, got {text!r}"
        )
    return Pattern((int(match[1]), int(match[2])))


def parse_shape(text: str) -> tuple[int, int]:
    """``"OUTxIN"`` (e.g. ``4096x4096``) as ``(out_features, in_features)``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"shape must look like OUTxIN with positive sizes, got {text!r}")
    return int(match[1]), int(match[2])


def parse_sparsity(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {text!r}")
    return value


@dataclass(frozen=True)
class Point:
    """One configuration of the grid."""

    out_features: int
    in_features: int
    batch: int
    sparsity: float
    pattern: Pattern = field(default_factory=Pattern)
    label: str = ""  # e.g. the model layer it stands for

    @property
    def shape_name(self) -> str:
        return f"{self.out_features}x{self.in_features}"


@dataclass(frozen=True)
class LayerShape:
    model: str
    layer: str
    kind: str
    out_features: int
    in_features: int
    n: int


def load_layer_shapes(path: str | None = None) -> list[LayerShape]:
    """Layers of real models (BERT, LLM MLP, ResNet-50 1x1 convs, MobileNet pointwise).

    Reads the CSV shipped in the package unless ``path`` names another file with
    the same columns (``model,layer,kind,out_features,in_features,n``).
    """
    if path is None:
        text = resources.files(__package__).joinpath("layer_shapes.csv").read_text()
    else:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    shapes = []
    for row in csv.DictReader(lines):
        try:
            shapes.append(
                LayerShape(
                    row["model"],
                    row["layer"],
                    row["kind"],
                    int(row["out_features"]),
                    int(row["in_features"]),
                    int(row["n"]),
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"bad layer-shapes row {row!r}: {error}") from None
    return shapes


def grid(
    shapes: Sequence[tuple[int, int]],
    batches: Sequence[int],
    sparsities: Sequence[float],
    patterns: Sequence[Pattern],
) -> list[Point]:
    """Every combination, ordered so that one weight is pruned once for all its batches."""
    return [
        Point(m, k, b, s, p)
        for (m, k) in shapes
        for p in patterns
        for s in sparsities
        for b in batches
    ]


def layer_grid(
    layers: Sequence[LayerShape], sparsities: Sequence[float], patterns: Sequence[Pattern]
) -> list[Point]:
    """One point per distinct (shape, n) of ``layers`` at each sparsity and pattern."""
    seen: dict[tuple[int, int, int], str] = {}
    for layer in layers:
        key = (layer.out_features, layer.in_features, layer.n)
        seen.setdefault(key, f"{layer.model} {layer.layer}")
    return [
        Point(m, k, n, s, p, label)
        for (m, k, n), label in seen.items()
        for p in patterns
        for s in sparsities
    ]


def magnitude_prune(weight: np.ndarray, sparsity: float, pattern: Pattern) -> np.ndarray:
    """A copy of ``weight`` with the smallest-magnitude entries (or blocks, by L2 norm) zeroed.

    Exactly ``round(sparsity * count)`` entries or blocks are zeroed, by the
    package's pruning core (:mod:`sparsegemm.pruning`). Block pruning needs the
    shape to be a multiple of the block size, so every stored block is full.
    """
    if pattern.blocksize is None:
        return pruning.magnitude_prune(weight, sparsity)
    r, c = pattern.blocksize
    if weight.shape[0] % r or weight.shape[1] % c:
        raise ValueError(f"shape {weight.shape} is not a multiple of the block {r}x{c}")
    return pruning.block_prune(weight, pattern.blocksize, sparsity)


class WeightCache:
    """Pruned weights and inputs for the grid, each made once and reused across batches."""

    def __init__(self, dtype: np.dtype, seed: int = 0):
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self._dense: dict[tuple[int, int], np.ndarray] = {}
        self._pruned: tuple[tuple, np.ndarray] | None = None

    def dense(self, out_features: int, in_features: int) -> np.ndarray:
        key = (out_features, in_features)
        if key not in self._dense:
            self._dense.clear()  # the grid visits one shape at a time
            rng = np.random.default_rng(self.seed)
            scale = 1.0 / np.sqrt(in_features)
            self._dense[key] = (rng.standard_normal(key, dtype=np.float32) * scale).astype(
                self.dtype
            )
        return self._dense[key]

    def pruned(self, point: Point) -> np.ndarray:
        key = (point.out_features, point.in_features, point.sparsity, point.pattern)
        if self._pruned is None or self._pruned[0] != key:
            dense = self.dense(point.out_features, point.in_features)
            self._pruned = (key, magnitude_prune(dense, point.sparsity, point.pattern))
        return self._pruned[1]

    def inputs(self, batch: int, in_features: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed + 1 + batch)
        return rng.standard_normal((batch, in_features), dtype=np.float32).astype(self.dtype)


def iter_shapes(points: Sequence[Point]) -> Iterator[tuple[int, int]]:
    """Distinct shapes of ``points`` in order of first appearance."""
    seen: dict[tuple[int, int], None] = {}
    for point in points:
        seen.setdefault((point.out_features, point.in_features), None)
    yield from seen
