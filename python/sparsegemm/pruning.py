"""Pruning to the contract the formats read: a dense array with zeros.

The pruning side and the format side meet at one place: a dense weight of the
original shape and dtype whose pruned entries are exactly zero. Any format can
then be built from it (``CSRMatrix.from_dense``, ``BSRMatrix.from_dense``), and
either side can change without the other. numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NORMS = ("l1", "l2")


def _check_weight(W: Any) -> np.ndarray:
    array = np.asarray(W)
    if array.ndim != 2:
        raise ValueError(f"W must be 2-dimensional, got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"W must have a real numeric dtype, got {array.dtype}")
    return array


def _pruned_count(sparsity: Any, total: int) -> int:
    """How many of ``total`` units to prune for a fraction ``sparsity`` in [0, 1]."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.integer, np.floating)):
        raise TypeError(f"sparsity must be a number in [0, 1], got {sparsity!r}")
    sparsity = float(sparsity)
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return round(sparsity * total)


def magnitude_prune(W: Any, sparsity: float) -> np.ndarray:
    """Zero the ``round(sparsity * W.size)`` entries of smallest magnitude (unstructured).

    Returns a new array of W's shape and dtype; W is not modified. Ties are
    broken by position (earlier entries are pruned first); NaN counts as the
    largest magnitude and is kept.
    """
    array = _check_weight(W)
    pruned = np.array(array, copy=True)
    count = _pruned_count(sparsity, array.size)
    if count:
        order = np.argsort(np.abs(array), axis=None, kind="stable")
        pruned.reshape(-1)[order[:count]] = 0
    return pruned


def block_norms(W: Any, blocksize: tuple[int, int], norm: str = "l2") -> np.ndarray:
    """Norm of every ``blocksize`` block of W: shape (ceil(M / R), ceil(K / C)).

    Edge blocks (when the shape does not divide by the block) take the norm of
    the entries they hold.
    """
    array = _check_weight(W)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    r, c = _check_prune_blocksize(blocksize)
    rows, cols = array.shape
    block_rows, block_cols = -(-rows // r), -(-cols // c)
    padded = np.zeros((block_rows * r, block_cols * c), dtype=np.float64)
    magnitude = np.abs(array.astype(np.float64, copy=False))
    padded[:rows, :cols] = magnitude if norm == "l1" else magnitude * magnitude
    sums = padded.reshape(block_rows, r, block_cols, c).sum(axis=(1, 3))
    return sums if norm == "l1" else np.sqrt(sums)


def _check_prune_blocksize(blocksize: Any) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in blocksize)
    except (TypeError, ValueError):
        raise ValueError(f"blocksize must be a pair of positive integers, got {blocksize!r}") from None
    if r < 1 or c < 1:
        raise ValueError(f"blocksize must be a pair of positive integers, got {blocksize!r}")
    return r, c


def block_prune(
    W: Any, blocksize: tuple[int, int], sparsity: float, norm: str = "l2"
) -> np.ndarray:
    """Zero the ``round(sparsity * nblocks)`` ``blocksize`` blocks of smallest norm.

    Parameters
    ----------
    W
        2-d weight (out_features x in_features); not modified.
    blocksize
        (R, C) block shape, e.g. (4, 1) to match ``BSRMatrix(blocksize=(4, 1))``.
        The shape need not divide by it: edge blocks are ranked by the norm of
        the entries they hold.
    sparsity
        Fraction of blocks to prune, in [0, 1].
    norm
        "l2" (Frobenius norm of the block) or "l1" (sum of magnitudes).

    Returns
    -------
    numpy.ndarray
        A copy of W (same shape and dtype) whose pruned blocks are zero. Ties
        are broken by position (earlier blocks are pruned first); a block
        holding NaN counts as the largest and is kept.
    """
    array = _check_weight(W)
    r, c = _check_prune_blocksize(blocksize)
    norms = block_norms(array, (r, c), norm)
    count = _pruned_count(sparsity, norms.size)
    pruned = np.array(array, copy=True)
    if count:
        keep = np.ones(norms.size, dtype=bool)
        keep[np.argsort(norms, axis=None, kind="stable")[:count]] = False
        mask = np.repeat(np.repeat(keep.reshape(norms.shape), r, axis=0), c, axis=1)
        pruned[~mask[: array.shape[0], : array.shape[1]]] = 0
    return pruned
