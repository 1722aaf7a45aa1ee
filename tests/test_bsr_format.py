"""BSRMatrix: building, converting, properties, and rejecting malformed arrays."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sparsegemm import BSRMatrix, CSRMatrix


def blocky(rng, shape, blocksize, density=0.5, dtype=np.float64):
    r, c = blocksize
    keep = rng.random((-(-shape[0] // r), -(-shape[1] // c))) < density
    mask = np.kron(keep, np.ones((r, c), dtype=bool))[: shape[0], : shape[1]]
    return (rng.standard_normal(shape) * mask).astype(dtype)


@pytest.mark.parametrize("blocksize", [(4, 1), (8, 1), (16, 1), (4, 4), (3, 2), (1, 1)])
@pytest.mark.parametrize("shape", [(0, 0), (1, 1), (5, 3), (16, 16), (33, 17)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_round_trip(blocksize, shape, dtype):
    W = blocky(np.random.default_rng(0), shape, blocksize, dtype=dtype)
    A = BSRMatrix.from_dense(W, blocksize)
    assert A.shape == shape and A.blocksize == blocksize and A.dtype == dtype
    np.testing.assert_array_equal(A.to_dense(), W)
    np.testing.assert_array_equal(A.toarray(), W)
    assert A.data.shape == (A.nnz_blocks, *blocksize)
    assert A.nnz == A.nnz_blocks * blocksize[0] * blocksize[1]


def test_from_dense_keeps_blocks_with_any_nonzero_or_nan():
    W = np.zeros((8, 3))
    W[1, 0] = 1.0  # block row 0, column 0
    W[6, 2] = np.nan  # block row 1, column 2
    W[5, 1] = 1e-9  # below the threshold below
    A = BSRMatrix.from_dense(W, (4, 1))
    assert A.nnz_blocks == 3
    np.testing.assert_array_equal(A.indptr, [0, 1, 3])
    np.testing.assert_array_equal(A.indices, [0, 1, 2])
    thresholded = BSRMatrix.from_dense(W, (4, 1), threshold=1e-6)
    assert thresholded.nnz_blocks == 2  # the NaN block stays: NaN is not provably small


def test_from_dense_accepts_any_memory_order():
    W = blocky(np.random.default_rng(1), (20, 30), (4, 4))
    for view in [np.asfortranarray(W), W[::2, ::3], W.T]:
        np.testing.assert_array_equal(BSRMatrix.from_dense(view, (4, 4)).to_dense(), view)


def test_properties_and_reporting():
    W = np.zeros((8, 4), dtype=np.float32)
    W[0, 0] = W[1, 0] = 1.0  # one 4x1 block, half full
    A = BSRMatrix.from_dense(W, (4, 1))
    assert A.nnz_blocks == 1 and A.nnz == 4
    assert A.density == pytest.approx(4 / 32)
    assert A.sparsity == pytest.approx(1 - 4 / 32)
    # 4 values (16 B) + 1 index (4 B) + 3 block-row pointers (24 B) over 2 nonzeros
    assert A.bytes_per_nonzero == pytest.approx((16 + 4 + 24) / 2)
    assert "BSRMatrix 8x4" in repr(A)
    for array in (A.indptr, A.indices, A.data):
        assert not array.flags.writeable
    assert A.indptr.dtype == np.int64 and A.indices.dtype == np.int32
    assert BSRMatrix.from_dense(np.zeros((3, 3))).bytes_per_nonzero == 0.0


def test_astype_is_cached_and_exact():
    W = blocky(np.random.default_rng(2), (9, 9), (4, 1))
    A = BSRMatrix.from_dense(W, (4, 1))
    A32 = A.astype(np.float32)
    assert A32.dtype == np.float32 and A.astype(np.float32) is A32 and A.astype(np.float64) is A
    np.testing.assert_array_equal(A32.to_dense(), W.astype(np.float32))
    assert A32.blocksize == (4, 1)


def test_scipy_round_trip_divisible_shape():
    W = blocky(np.random.default_rng(3), (16, 12), (4, 2))
    A = BSRMatrix.from_dense(W, (4, 2))
    S = A.to_scipy()
    assert isinstance(S, sp.bsr_array) and S.blocksize == (4, 2)
    np.testing.assert_array_equal(S.toarray(), W)
    B = BSRMatrix.from_scipy(S)
    assert B.blocksize == (4, 2)
    np.testing.assert_array_equal(B.to_dense(), W)
    assert BSRMatrix(S).blocksize == (4, 2)


def test_to_scipy_needs_divisible_shape_or_pad():
    W = blocky(np.random.default_rng(4), (10, 7), (4, 2))
    A = BSRMatrix.from_dense(W, (4, 2))
    with pytest.raises(ValueError, match="pad=True"):
        A.to_scipy()
    padded = A.to_scipy(pad=True)
    assert padded.shape == (12, 8)
    np.testing.assert_array_equal(padded.toarray()[:10, :7], W)
    assert not padded.toarray()[10:].any() and not padded.toarray()[:, 7:].any()


def test_from_scipy_other_formats_and_blocksizes():
    W = blocky(np.random.default_rng(5), (10, 7), (2, 1))
    for matrix in [sp.csr_array(W), sp.coo_matrix(W), sp.csc_array(W)]:
        A = BSRMatrix.from_scipy(matrix, (4, 2))
        assert A.shape == (10, 7) and A.blocksize == (4, 2)
        np.testing.assert_array_equal(A.to_dense(), W)
    assert BSRMatrix.from_scipy(sp.csr_array(W)).blocksize == (4, 1)  # the default
    reblocked = BSRMatrix.from_scipy(sp.bsr_array(W[:8, :6], blocksize=(2, 2)), (4, 1))
    np.testing.assert_array_equal(reblocked.to_dense(), W[:8, :6])


def test_from_scipy_sums_duplicates_without_touching_input():
    rows, cols = np.array([0, 0, 3]), np.array([1, 1, 2])
    coo = sp.coo_array((np.array([1.0, 2.0, 5.0]), (rows, cols)), shape=(4, 4))
    A = BSRMatrix.from_scipy(coo, (2, 2))
    assert A.to_dense()[0, 1] == 3.0 and A.to_dense()[3, 2] == 5.0
    assert coo.nnz == 3


def test_tuple_constructor():
    data = np.arange(8, dtype=np.float64).reshape(2, 2, 2)
    A = BSRMatrix((data, [0, 1], [0, 1, 2]), shape=(4, 4))
    expected = np.zeros((4, 4))
    expected[:2, :2] = data[0]
    expected[2:, 2:] = data[1]
    np.testing.assert_array_equal(A.to_dense(), expected)
    flat = BSRMatrix((data.ravel(), [0, 1], [0, 1, 2]), shape=(4, 4), blocksize=(2, 2))
    np.testing.assert_array_equal(flat.to_dense(), expected)
    assert BSRMatrix(A, dtype=np.float32).dtype == np.float32


MALFORMED = [
    # (data, indices, indptr, shape, blocksize, message)
    (np.ones((1, 2, 1)), [0], [0, 1], (4, 3), None, "rows \\+ 1"),  # indptr too short
    (np.ones((2, 2, 1)), [0, 1], [0, 2, 1, 2], (6, 3), None, "non-decreasing"),
    (np.ones((2, 2, 1)), [1, 0], [0, 2, 2], (4, 3), None, "sorted and unique"),
    (np.ones((2, 2, 1)), [1, 1], [0, 2, 2], (4, 3), None, "sorted and unique"),
    (np.ones((1, 2, 1)), [3], [0, 1, 1], (4, 3), None, "out of range"),
    (np.ones((1, 2, 1)), [-1], [0, 1, 1], (4, 3), None, "out of range"),
    (np.ones((1, 2, 1)), [0], [1, 1, 1], (4, 3), None, "indptr\\[0\\]"),
    (np.ones((1, 2, 1)), [0], [0, 1, 2], (4, 3), None, "indptr\\[-1\\]"),
    (np.ones(3), [0], [0, 1, 1], (4, 3), (2, 1), "nblocks \\* R \\* C"),
    (np.ones((1, 2, 1)), [0], [0, 1, 1], (4, 3), (1, 2), "blocksize"),
    (np.ones((1, 2, 2)), [1], [0, 0, 1], (4, 3), None, "padding entries must be zero"),
    (np.ones((1, 2, 1)), [0], [0, 1], (1, 3), None, "padding entries must be zero"),
    (np.ones((2, 2)), [0], [0, 1], (4, 3), None, "shape \\(nblocks, R, C\\)"),
    (np.ones((1, 2, 1)), [0], [0, 1, 1], (-1, 3), None, "non-negative"),
]


@pytest.mark.parametrize("data, indices, indptr, shape, blocksize, message", MALFORMED)
def test_malformed_arrays_are_rejected(data, indices, indptr, shape, blocksize, message):
    with pytest.raises(ValueError, match=message):
        BSRMatrix((data, np.asarray(indices), np.asarray(indptr)), shape=shape, blocksize=blocksize)


@pytest.mark.parametrize("blocksize", [(0, 1), (1, 65), (2,), "ab", (1.5, 1), (True, 1)])
def test_bad_blocksize(blocksize):
    with pytest.raises(ValueError, match="blocksize"):
        BSRMatrix.from_dense(np.ones((4, 4)), blocksize)


def test_bad_inputs():
    with pytest.raises(ValueError, match="2-dimensional"):
        BSRMatrix.from_dense(np.ones(4))
    with pytest.raises(ValueError, match="threshold"):
        BSRMatrix.from_dense(np.ones((4, 4)), (4, 1), threshold=-1)
    with pytest.raises(TypeError, match="dtype"):
        BSRMatrix.from_dense(np.ones((4, 4), dtype=complex))
    with pytest.raises(TypeError):
        BSRMatrix(np.ones((4, 4)))
    with pytest.raises(TypeError, match="scipy"):
        BSRMatrix.from_scipy(np.ones((4, 4)))
    with pytest.raises(ValueError, match="blocksize"):
        BSRMatrix(BSRMatrix.from_dense(np.ones((4, 4))), blocksize=(2, 2))


def test_csr_shares_the_base_and_reports_bytes():
    W = np.eye(4, dtype=np.float32)
    C = CSRMatrix.from_dense(W)
    # 4 float32 values, 4 16-bit column indices (cols <= 65536), 5 int64 row pointers
    assert C.bytes_per_nonzero == pytest.approx((4 * 4 + 4 * 2 + 5 * 8) / 4)
    assert C.astype(np.float64).dtype == np.float64


@pytest.mark.parametrize("blocksize", [(4, 1), (1, 4), (3, 2), (4, 4)])
@pytest.mark.parametrize("shape", [(0, 0), (1, 1), (9, 7), (16, 12)])
def test_transpose_matches_dense_and_permutation_maps_blocks(blocksize, shape):
    W = blocky(np.random.default_rng(7), shape, blocksize)
    A = BSRMatrix.from_dense(W, blocksize)
    T, permutation = A.transpose_with_permutation()
    assert T.shape == shape[::-1] and T.blocksize == blocksize[::-1]
    np.testing.assert_array_equal(T.to_dense(), W.T)
    np.testing.assert_array_equal(A.T.to_dense(), W.T)
    np.testing.assert_array_equal(T.data, A.data[permutation].transpose(0, 2, 1))
