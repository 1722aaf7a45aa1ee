"""BitmapMatrix: building, converting, properties, and rejecting malformed arrays."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import sparsegemm
from sparsegemm import BitmapMatrix, CSRMatrix, linear, sddmm

DTYPES = [np.float32, np.float64]
# Columns straddling one 64-bit word and the SIMD chunks inside it.
COLS = [0, 1, 7, 8, 9, 15, 16, 17, 33, 63, 64, 65, 127, 128, 129, 300]


def random_weight(rng, shape, density, dtype):
    values = rng.uniform(-1, 1, shape)
    values[values == 0] = 0.5
    return np.where(rng.random(shape) < density, values, 0.0).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", COLS)
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_dense_round_trip(dtype, cols, density):
    W = random_weight(np.random.default_rng(cols), (5, cols), density, dtype)
    A = BitmapMatrix.from_dense(W)
    assert A.shape == (5, cols) and A.dtype == dtype
    assert A.nnz == np.count_nonzero(W)
    np.testing.assert_array_equal(A.to_dense(), W)
    assert A.bits.shape == (5, -(-cols // 64)) and A.bits.dtype == np.uint64
    np.testing.assert_array_equal(A.offsets, np.concatenate([[0], np.cumsum((W != 0).sum(1))]))
    np.testing.assert_array_equal(A.data, W[W != 0])  # row-major order


@pytest.mark.parametrize("dtype", DTYPES)
def test_bits_layout(dtype):
    W = np.zeros((2, 70), dtype)
    W[0, 0] = 1
    W[0, 63] = 2
    W[1, 64] = 3
    W[1, 69] = 4
    A = BitmapMatrix.from_dense(W)
    np.testing.assert_array_equal(A.bits, np.array([[1 | (1 << 63), 0], [0, 1 | (1 << 5)]],
                                                   dtype=np.uint64))
    np.testing.assert_array_equal(A.data, [1, 2, 3, 4])
    np.testing.assert_array_equal(A.offsets, [0, 2, 4])


@pytest.mark.parametrize("dtype", DTYPES)
def test_scipy_round_trip_keeps_explicit_zeros(dtype):
    rng = np.random.default_rng(2)
    W = random_weight(rng, (9, 70), 0.4, dtype)
    S = sp.csr_array(W)
    S.data[0] = 0.0  # an explicitly stored zero stays stored
    A = BitmapMatrix.from_scipy(S)
    assert A.nnz == S.nnz
    back = A.to_scipy()
    assert back.nnz == S.nnz
    np.testing.assert_array_equal(back.toarray(), S.toarray())
    np.testing.assert_array_equal(back.indices, S.indices)
    np.testing.assert_array_equal(back.indptr, S.indptr)
    np.testing.assert_array_equal(BitmapMatrix(S).to_dense(), S.toarray())
    # Other scipy formats and duplicate entries (summed, input untouched).
    coo = sp.coo_array((np.array([1.0, 2.0, 5.0]), (np.array([0, 0, 1]), np.array([3, 3, 2]))),
                       shape=(2, 4))
    B = BitmapMatrix.from_scipy(coo)
    np.testing.assert_array_equal(B.to_dense(), [[0, 0, 0, 3], [0, 0, 5, 0]])
    assert coo.nnz == 3


def test_from_dense_threshold_nan_and_memory_orders():
    W = np.array([[0.0, 1e-9, np.nan, 2.0]])
    assert BitmapMatrix.from_dense(W).nnz == 3
    A = BitmapMatrix.from_dense(W, threshold=1e-6)
    assert A.nnz == 2  # NaN is not provably small
    V = random_weight(np.random.default_rng(3), (20, 70), 0.5, np.float64)
    for view in [np.asfortranarray(V), V[::2, ::3], V.T]:
        np.testing.assert_array_equal(BitmapMatrix.from_dense(view).to_dense(), view)


def test_arrays_constructor_and_astype():
    W = random_weight(np.random.default_rng(4), (6, 100), 0.5, np.float32)
    A = BitmapMatrix.from_dense(W)
    B = BitmapMatrix((A.data, A.bits), shape=A.shape)
    np.testing.assert_array_equal(B.to_dense(), W)
    C = BitmapMatrix((A.data, A.bits.reshape(-1).astype(np.int64)), shape=A.shape)
    np.testing.assert_array_equal(C.to_dense(), W)
    D = A.astype(np.float64)
    assert D.dtype == np.float64 and D is A.astype("float64")
    np.testing.assert_array_equal(D.to_dense(), W.astype(np.float64))
    assert BitmapMatrix(A).to_dense().tobytes() == W.tobytes()
    E = A.with_data(np.arange(A.nnz, dtype=np.float32))
    np.testing.assert_array_equal(E.data, np.arange(A.nnz))
    np.testing.assert_array_equal(E.bits, A.bits)


def test_properties_and_reporting():
    W = np.zeros((2, 128), np.float32)
    W[0, :64] = 1.0
    A = BitmapMatrix.from_dense(W)
    assert A.nnz == 64 and A.density == pytest.approx(0.25)
    # 64 values (256 B) + 4 words (32 B) + 3 offsets (24 B)
    assert A.nbytes == 256 + 32 + 24
    assert A.bytes_per_nonzero == pytest.approx((256 + 32 + 24) / 64)
    assert "BitmapMatrix 2x128" in repr(A)
    for array in (A.bits, A.offsets, A.data):
        assert not array.flags.writeable
    # At 50% sparsity a large float32 bitmap costs about 4 * 0.5 + 1/8 bytes per weight.
    big = random_weight(np.random.default_rng(5), (256, 1024), 0.5, np.float32)
    per_weight = BitmapMatrix.from_dense(big).nbytes / big.size
    assert per_weight == pytest.approx(2.125, abs=0.02)


def test_rejects_malformed_arrays():
    data = np.ones(2, np.float32)
    with pytest.raises(ValueError, match="bits must have shape"):
        BitmapMatrix((data, np.zeros((2, 1), np.uint64)), shape=(2, 70))
    with pytest.raises(ValueError, match="past the last column"):
        BitmapMatrix((data, np.array([[1 | (1 << 10)]], np.uint64)), shape=(1, 10))
    with pytest.raises(ValueError, match="one value per set bit"):
        BitmapMatrix((data, np.array([[7]], np.uint64)), shape=(1, 10))
    with pytest.raises(TypeError, match="integer dtype"):
        BitmapMatrix((data, np.array([[3.0]])), shape=(1, 10))
    with pytest.raises(ValueError, match="non-negative"):
        BitmapMatrix((data, np.array([[-1]], np.int32)), shape=(1, 10))
    with pytest.raises(ValueError, match="shape is required"):
        BitmapMatrix((data, np.array([[3]], np.uint64)))
    with pytest.raises(ValueError, match="shape must be"):
        BitmapMatrix((data, np.array([[3]], np.uint64)), shape=(1, -2))
    with pytest.raises(TypeError, match="BitmapMatrix\\(\\) takes"):
        BitmapMatrix(np.eye(3))
    with pytest.raises(ValueError, match="2-dimensional"):
        BitmapMatrix.from_dense(np.ones(3))
    with pytest.raises(ValueError, match="threshold"):
        BitmapMatrix.from_dense(np.ones((2, 2)), threshold=-1)
    with pytest.raises(TypeError, match="scipy.sparse"):
        BitmapMatrix.from_scipy(np.ones((2, 2)))
    with pytest.raises(ValueError, match="data must have shape"):
        BitmapMatrix.from_dense(np.eye(3)).with_data(np.ones(4))
    unsorted = sp.csr_array((np.ones(2), np.array([3, 1]), np.array([0, 2])), shape=(1, 5))
    unsorted.has_sorted_indices = True  # lie, as a hand-built csr can
    unsorted.has_canonical_format = True
    with pytest.raises(ValueError, match="sorted"):
        BitmapMatrix.from_scipy(unsorted)


def test_csr_only_products_reject_a_bitmap():
    A = BitmapMatrix.from_dense(np.eye(3))
    with pytest.raises(TypeError, match="needs a CSRMatrix.*BitmapMatrix"):
        sddmm(A, np.ones((3, 2)), np.ones((3, 2)))
    # linear accepts it
    np.testing.assert_array_equal(linear(np.eye(3), A), np.eye(3))
    assert isinstance(CSRMatrix.from_dense(A.to_dense()), CSRMatrix)


def test_scipy_conventions_hold_for_the_bitmap():
    """Pickling, deep copies, .T with its permutation and dense @ A, as for CSR and BSR."""
    import copy
    import pickle

    rng = np.random.default_rng(11)
    W = sparsegemm.magnitude_prune(rng.standard_normal((37, 70)), 0.5)
    A = BitmapMatrix.from_dense(W)
    for clone in (pickle.loads(pickle.dumps(A)), copy.deepcopy(A), A.copy()):
        np.testing.assert_array_equal(clone.to_dense(), W)
    T, permutation = A.transpose_with_permutation()
    np.testing.assert_array_equal(T.to_dense(), W.T)
    np.testing.assert_array_equal(T.data, A.data[permutation])
    np.testing.assert_array_equal(A.T.to_dense(), W.T)
    x = rng.standard_normal((5, 37))
    np.testing.assert_allclose(x @ A, x @ W, rtol=1e-12, atol=1e-12)
