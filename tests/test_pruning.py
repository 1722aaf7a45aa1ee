"""block_prune and magnitude_prune: the dense-with-zeros contract."""

from __future__ import annotations

import numpy as np
import pytest

from sparsegemm import BSRMatrix, block_prune, magnitude_prune
from sparsegemm.pruning import block_norms


def block_view(W, blocksize):
    r, c = blocksize
    return W.reshape(W.shape[0] // r, r, W.shape[1] // c, c)


@pytest.mark.parametrize("blocksize", [(4, 1), (8, 1), (16, 1), (4, 4)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
def test_block_prune_zeroes_the_weakest_whole_blocks(blocksize, sparsity):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((64, 48)).astype(np.float32)
    pruned = block_prune(W, blocksize, sparsity)
    assert pruned.shape == W.shape and pruned.dtype == W.dtype
    blocks = block_view(pruned, blocksize)
    kept = np.abs(blocks).sum(axis=(1, 3)) > 0
    nblocks = kept.size
    assert (~kept).sum() == round(sparsity * nblocks)
    # Kept blocks are untouched and every kept block outranks every pruned one.
    original = block_view(W, blocksize)
    np.testing.assert_array_equal(blocks.transpose(0, 2, 1, 3)[kept],
                                  original.transpose(0, 2, 1, 3)[kept])
    norms = np.sqrt((original.astype(np.float64) ** 2).sum(axis=(1, 3)))
    if kept.any() and (~kept).any():
        assert norms[kept].min() >= norms[~kept].max()
    assert BSRMatrix.from_dense(pruned, blocksize).nnz_blocks == kept.sum()


def test_block_prune_l1_and_l2_rank_differently():
    # Block 0 has one large entry, block 1 several medium ones: L1 and L2 disagree.
    W = np.array([[3.0], [0.0], [0.0], [0.0], [1.0], [1.0], [1.0], [0.5]])
    # block 0: L1 3.0, L2 3.0; block 1: L1 3.5, L2 about 1.8
    by_l2 = block_prune(W, (4, 1), 0.5, norm="l2")
    by_l1 = block_prune(W, (4, 1), 0.5, norm="l1")
    assert by_l2[0, 0] == 3.0 and not by_l2[4:].any()
    assert by_l1[0, 0] == 0.0 and by_l1[4:].all()


def test_block_prune_non_divisible_shape_and_input_untouched():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((10, 7))
    copy = W.copy()
    pruned = block_prune(W, (4, 2), 0.5)
    np.testing.assert_array_equal(W, copy)
    assert block_norms(W, (4, 2)).shape == (3, 4)
    zero_blocks = sum(
        not pruned[i:i + 4, j:j + 2].any() for i in range(0, 10, 4) for j in range(0, 7, 2)
    )
    assert zero_blocks == 6


def test_block_prune_rejects_bad_arguments():
    W = np.ones((8, 8))
    with pytest.raises(ValueError, match="amount"):
        block_prune(W, (4, 1), 1.5)
    with pytest.raises(TypeError, match="amount"):
        block_prune(W, (4, 1), "half")
    with pytest.raises(ValueError, match="norm"):
        block_prune(W, (4, 1), 0.5, norm="max")
    with pytest.raises(ValueError, match="blocksize"):
        block_prune(W, (0, 1), 0.5)
    with pytest.raises(ValueError, match="2-dimensional"):
        block_prune(np.ones(8), (4, 1), 0.5)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9, 1.0])
def test_magnitude_prune_removes_the_smallest_entries(sparsity):
    rng = np.random.default_rng(2)
    W = rng.standard_normal((30, 20)).astype(np.float32)
    pruned = magnitude_prune(W, sparsity)
    zeros = pruned == 0
    assert zeros.sum() == round(sparsity * W.size)
    np.testing.assert_array_equal(pruned[~zeros], W[~zeros])
    if zeros.any() and (~zeros).any():
        assert np.abs(W[~zeros]).min() >= np.abs(W[zeros]).max()


def test_ties_go_to_the_earlier_unit_and_nan_ranks_largest():
    from sparsegemm.pruning import lowest_units

    scores = np.array([3.0, 1.0, np.nan, 1.0, 1.0, 0.5])
    assert lowest_units(scores, 2).tolist() == [1, 5]
    assert lowest_units(scores, 3).tolist() == [1, 3, 5]
    assert lowest_units(scores, 5).tolist() == [0, 1, 3, 4, 5]
    assert lowest_units(scores, 6).tolist() == list(range(6))
    with pytest.raises(ValueError, match="count"):
        lowest_units(scores, 7)


def test_edge_blocks_are_scored_as_full_blocks():
    from sparsegemm.pruning import block_norms

    # 5 x 1 with 4x1 blocks: the edge block holds one entry of 1; scaled to a
    # full block it scores as four ones, the same as the full block above it.
    np.testing.assert_allclose(block_norms(np.ones((5, 1)), (4, 1), "l1"), [[4.0], [4.0]])
    np.testing.assert_allclose(block_norms(np.ones((5, 1)), (4, 1), "l2"), [[2.0], [2.0]])


def test_amount_is_a_fraction_or_a_count():
    W = np.arange(1, 21, dtype=np.float64).reshape(4, 5)
    assert (magnitude_prune(W, 7) == 0).sum() == 7
    assert (magnitude_prune(W, 0.35) == 0).sum() == 7
    with pytest.raises(ValueError, match="larger than the number of units"):
        magnitude_prune(W, 21)
    with pytest.raises(TypeError, match="not bool"):
        magnitude_prune(W, True)
