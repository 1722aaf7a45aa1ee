"""The pruning core: which weights to zero, in numpy. Everything else calls it.

The pruning side and the format side meet at one place: a dense weight of the
original shape and dtype whose pruned entries are exactly zero. Any format can
then be built from it (``CSRMatrix.from_dense``, ``BSRMatrix.from_dense``), and
either side can change without the other.

This module holds the rules every pruner in sparsegemm shares, so they agree:

* **amount** (one word everywhere): a float fraction in [0, 1] of the units, or
  an int count, as in ``torch.nn.utils.prune``. Unlike torch's iterative
  ``PruningContainer``, which prunes a share of what *remains*, a fraction here
  is of *all* units: pruning 0.5 then 0.8 ends at 80%, not 90%.
  ``sparsegemm.prune`` scores already-pruned units lowest, so they count
  towards the amount and are never revived.
* **edge blocks** (when the shape does not divide by the block) are scored as
  if full: their mean is scaled to a full block's size, so a partial block is
  neither favoured nor penalised for holding fewer entries.
* **ties** are broken by position: among equal scores the earlier unit (in C
  order) is pruned first. NaN counts as the largest score.

numpy only: the torch criteria (:mod:`sparsegemm.prune`), the planner and the
benchmarks call these functions.
"""

from __future__ import annotations

import numbers
from typing import Any, Union

import numpy as np

Amount = Union[int, float]
NORMS = ("l1", "l2")


def num_to_prune(amount: Any, total: int) -> int:
    """How many of ``total`` units ``amount`` prunes: a fraction in [0, 1] or an int count."""
    if isinstance(amount, bool):
        raise TypeError("amount must be an int count or a float fraction, not bool")
    if isinstance(amount, numbers.Integral):
        amount = int(amount)
        if amount < 0:
            raise ValueError(f"amount={amount} must be >= 0")
        if amount > total:
            raise ValueError(f"amount={amount} is larger than the number of units ({total})")
        return int(amount)
    if isinstance(amount, numbers.Real):
        if not 0.0 <= float(amount) <= 1.0:
            raise ValueError(f"fractional amount={amount} must be in [0, 1]")
        return round(float(amount) * total)
    raise TypeError(
        f"amount must be an int count or a float fraction in [0, 1], got {type(amount).__name__}"
    )


def lowest_units(scores: Any, count: int) -> np.ndarray:
    """Flat indices of the ``count`` lowest scores; ties go to the earlier index.

    NaN ranks as the largest score. Runs in linear time (a partition, not a
    sort), so it suits weights of tens of millions of entries.
    """
    flat = np.asarray(scores, dtype=np.float64).ravel()
    if not 0 <= count <= flat.size:
        raise ValueError(f"count must be in [0, {flat.size}], got {count}")
    if count == 0:
        return np.empty(0, dtype=np.intp)
    if count == flat.size:
        return np.arange(flat.size)
    ranked = np.where(np.isnan(flat), np.inf, flat)
    threshold = np.partition(ranked, count - 1)[count - 1]
    below = np.flatnonzero(ranked < threshold)
    tied = np.flatnonzero(ranked == threshold)[: count - below.size]
    return np.sort(np.concatenate([below, tied]))


def keep_mask(scores: Any, amount: Amount) -> np.ndarray:
    """Boolean mask of ``scores``' shape: False for the units ``amount`` prunes."""
    scores = np.asarray(scores)
    keep = np.ones(scores.shape, dtype=bool)
    keep.reshape(-1)[lowest_units(scores, num_to_prune(amount, scores.size))] = False
    return keep


def _check_blocksize(blocksize: Any) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in blocksize)
    except (TypeError, ValueError):
        raise ValueError(
            f"blocksize must be a pair of positive integers, got {blocksize!r}"
        ) from None
    if r < 1 or c < 1:
        raise ValueError(f"blocksize must be a pair of positive integers, got {blocksize!r}")
    return r, c


def _as_matrix(W: Any) -> np.ndarray:
    """W as ``out x rest`` (a conv weight ``(out, in, kh, kw)`` becomes ``out x in*kh*kw``)."""
    array = np.asarray(W)
    if array.ndim < 2:
        raise ValueError(f"W must have at least 2 dimensions, got shape {array.shape}")
    return array.reshape(array.shape[0], -1)


def _block_grid(matrix: np.ndarray, blocksize: tuple[int, int], fill: Any) -> np.ndarray:
    """matrix padded with ``fill`` to the block grid, as (block_rows, r, block_cols, c)."""
    r, c = blocksize
    rows, cols = matrix.shape
    block_rows, block_cols = -(-rows // r), -(-cols // c)
    padded = np.full((block_rows * r, block_cols * c), fill, dtype=matrix.dtype)
    padded[:rows, :cols] = matrix
    return padded.reshape(block_rows, r, block_cols, c)


def block_sums(W: Any, blocksize: tuple[int, int]) -> np.ndarray:
    """Plain sum of every block of W (as ``out x rest``): shape (ceil(M / R), ceil(K / C))."""
    matrix = _as_matrix(W)
    return _block_grid(matrix, _check_blocksize(blocksize), 0).sum(axis=(1, 3))


def all_zero_blocks(W: Any, blocksize: tuple[int, int]) -> np.ndarray:
    """True for every block of W (as ``out x rest``) that holds only zeros."""
    nonzero = _as_matrix(W) != 0
    return np.asarray(~_block_grid(nonzero, _check_blocksize(blocksize), False).any(axis=(1, 3)))


def block_norms(W: Any, blocksize: tuple[int, int], norm: Union[str, float] = "l2") -> np.ndarray:
    """The p-norm of every block of W (as ``out x rest``), edge blocks scaled to a full block.

    ``norm`` is "l1", "l2" or a positive p. Returns float64 of shape
    (ceil(M / R), ceil(K / C)). An edge block's p-th power sum is scaled by
    (R * C) / (entries it holds) before the root, the one rule for edge blocks.
    """
    p = {"l1": 1.0, "l2": 2.0}.get(norm, norm) if isinstance(norm, str) else norm
    if isinstance(p, str) or isinstance(p, bool) or not isinstance(p, numbers.Real) or p <= 0:
        raise ValueError(f"norm must be one of {NORMS} or a positive number, got {norm!r}")
    r, c = _check_blocksize(blocksize)
    matrix = _as_matrix(W)
    if matrix.dtype.kind not in "fiub":
        raise TypeError(f"W must have a real numeric dtype, got {matrix.dtype}")
    powered = np.abs(matrix.astype(np.float64, copy=False)) ** float(p)
    sums = _block_grid(powered, (r, c), 0.0).sum(axis=(1, 3))
    held = _block_grid(np.ones(matrix.shape, dtype=np.float64), (r, c), 0.0).sum(axis=(1, 3))
    return (sums * (r * c) / held) ** (1.0 / float(p))


def expand_blocks(block_mask: np.ndarray, blocksize: tuple[int, int], shape: tuple) -> np.ndarray:
    """A per-block mask blown up to the ``out x rest`` matrix of ``shape``, edges clipped."""
    r, c = _check_blocksize(blocksize)
    rows = shape[0]
    cols = int(np.prod(shape[1:], dtype=np.int64))
    full = np.repeat(np.repeat(np.asarray(block_mask), r, axis=0), c, axis=1)
    return full[:rows, :cols].reshape(shape)


def _check_weight(W: Any) -> np.ndarray:
    array = np.asarray(W)
    if array.ndim != 2:
        raise ValueError(f"W must be 2-dimensional, got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"W must have a real numeric dtype, got {array.dtype}")
    return array


def magnitude_prune(W: Any, amount: Amount) -> np.ndarray:
    """Zero the ``amount`` entries of smallest magnitude (unstructured).

    ``amount`` is a fraction in [0, 1] of the entries or an int count. Returns a
    new array of W's shape and dtype; W is not modified. Ties are broken by
    position (earlier entries are pruned first); NaN counts as the largest
    magnitude and is kept.
    """
    array = _check_weight(W)
    pruned = np.array(array, copy=True)
    pruned[~keep_mask(np.abs(array.astype(np.float64, copy=False)), amount)] = 0
    return pruned


def block_prune(
    W: Any, blocksize: tuple[int, int], amount: Amount, norm: Union[str, float] = "l2"
) -> np.ndarray:
    """Zero the ``amount`` ``blocksize`` blocks of smallest norm.

    Parameters
    ----------
    W
        2-d weight (out_features x in_features); not modified.
    blocksize
        (R, C) block shape, e.g. (4, 1) to match ``BSRMatrix(blocksize=(4, 1))``.
        The shape need not divide by it: edge blocks are scored as if full (see
        :func:`block_norms`).
    amount
        Fraction of blocks to prune, in [0, 1], or an int count of blocks.
    norm
        "l2" (Frobenius norm of the block), "l1" (sum of magnitudes) or a p.

    Returns
    -------
    numpy.ndarray
        A copy of W (same shape and dtype) whose pruned blocks are zero. Ties
        are broken by position (earlier blocks are pruned first); a block
        holding NaN counts as the largest and is kept.
    """
    array = _check_weight(W)
    r, c = _check_blocksize(blocksize)
    keep = keep_mask(block_norms(array, (r, c), norm), amount)
    pruned = np.array(array, copy=True)
    pruned[~expand_blocks(keep, (r, c), array.shape)] = 0
    return pruned
