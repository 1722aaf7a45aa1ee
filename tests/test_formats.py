"""CSRMatrix: construction from dense, scipy and raw arrays; conversion back; properties."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import scipy.sparse as sp

from sparsegemm import CSRMatrix

SCIPY_FORMATS = ["csr", "csc", "coo", "bsr", "lil", "dok", "dia"]
SCIPY_CLASSES = {
    "matrix": {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix,
               "bsr": sp.bsr_matrix, "lil": sp.lil_matrix, "dok": sp.dok_matrix,
               "dia": sp.dia_matrix},
    "array": {"csr": sp.csr_array, "csc": sp.csc_array, "coo": sp.coo_array,
              "bsr": sp.bsr_array, "lil": sp.lil_array, "dok": sp.dok_array,
              "dia": sp.dia_array},
}


def assert_same_csr(matrix: CSRMatrix, dense: np.ndarray) -> None:
    """matrix stores exactly the nonzeros of dense, canonically ordered."""
    expected = sp.csr_array(dense)
    assert matrix.shape == dense.shape
    np.testing.assert_array_equal(matrix.indptr, expected.indptr)
    np.testing.assert_array_equal(matrix.indices, expected.indices)
    np.testing.assert_array_equal(matrix.data, expected.data)
    np.testing.assert_array_equal(matrix.to_dense(), dense)


# --- from_dense -------------------------------------------------------------------------------


def test_from_dense_keeps_nonzeros(random_sparse):
    dense = random_sparse((13, 17), 0.3)
    matrix = CSRMatrix.from_dense(dense)
    assert_same_csr(matrix, dense)
    assert matrix.indptr.dtype == np.int64 and matrix.indices.dtype == np.int32


def test_from_dense_threshold():
    dense = np.array([[0.5, -0.1, 0.0], [0.2, -0.2, 3.0]])
    matrix = CSRMatrix.from_dense(dense, threshold=0.2)
    np.testing.assert_array_equal(matrix.to_dense(), [[0.5, 0, 0], [0, 0, 3.0]])
    assert matrix.nnz == 2
    assert CSRMatrix.from_dense(dense, threshold=np.inf).nnz == 0


def test_from_dense_threshold_is_not_rounded_to_float32():
    # float32(0.1) = 0.10000000149 > 0.1: kept, although float32(0.1) > float32(0.1) is false.
    matrix = CSRMatrix.from_dense(np.array([[0.1, 0.25]], np.float32), threshold=0.1)
    assert matrix.nnz == 2
    assert CSRMatrix.from_dense(np.array([[0.1]], np.float32), threshold=0.1000001).nnz == 0


def test_from_dense_keeps_nan_and_inf():
    dense = np.array([[np.nan, 0.0, -np.inf], [0.0, np.inf, 1e-300]])
    matrix = CSRMatrix.from_dense(dense, threshold=1.0)
    assert matrix.nnz == 3
    np.testing.assert_array_equal(matrix.indices, [0, 2, 1])
    assert np.isnan(matrix.data[0]) and matrix.data[1] == -np.inf and matrix.data[2] == np.inf


@pytest.mark.parametrize("threshold", [-1.0, np.nan, -np.inf])
def test_from_dense_rejects_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold"):
        CSRMatrix.from_dense(np.ones((2, 2)), threshold=threshold)


@pytest.mark.parametrize("shape", [(3,), (2, 2, 2), ()])
def test_from_dense_needs_2d(shape):
    with pytest.raises(ValueError, match="2-dimensional"):
        CSRMatrix.from_dense(np.ones(shape))


@pytest.mark.parametrize("source, expected", [
    (np.float16, np.float32), (np.float32, np.float32), (np.float64, np.float64),
    (np.int8, np.float64), (np.int64, np.float64), (np.uint32, np.float64), (np.bool_, np.float64),
])
def test_from_dense_dtype_rules(source, expected):
    dense = np.array([[1, 0], [0, 1]], dtype=source)
    matrix = CSRMatrix.from_dense(dense)
    assert matrix.dtype == expected and matrix.data.dtype == expected
    np.testing.assert_array_equal(matrix.to_dense(), np.eye(2))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object, "U3", "datetime64[s]"])
def test_from_dense_rejects_unsupported_dtypes(dtype):
    with pytest.raises(TypeError, match="dtype"):
        CSRMatrix.from_dense(np.zeros((2, 2), dtype=dtype))


def test_from_dense_dtype_argument():
    matrix = CSRMatrix.from_dense(np.eye(3), dtype=np.float32)
    assert matrix.dtype == np.float32
    with pytest.raises(TypeError):
        CSRMatrix.from_dense(np.eye(3), dtype=np.complex64)


def test_from_dense_any_memory_order(random_sparse):
    dense = random_sparse((9, 14), 0.4)
    for view in (np.asfortranarray(dense), dense[::-1][::-1], np.repeat(dense, 2, axis=1)[:, ::2],
                 dense.T.copy().T, dense[:, ::-1].copy()[:, ::-1]):
        assert_same_csr(CSRMatrix.from_dense(view), dense)


def test_from_dense_accepts_read_only_and_lists():
    dense = np.eye(4)
    dense.flags.writeable = False
    assert_same_csr(CSRMatrix.from_dense(dense), np.eye(4))
    assert_same_csr(CSRMatrix.from_dense([[1.0, 0.0], [0.0, 2.0]]), np.diag([1.0, 2.0]))


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0)])
def test_from_dense_empty_shapes(shape):
    matrix = CSRMatrix.from_dense(np.zeros(shape))
    assert matrix.shape == shape and matrix.nnz == 0 and matrix.density == 0.0
    assert matrix.indptr.shape == (shape[0] + 1,)
    assert matrix.to_dense().shape == shape


# --- from_scipy -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["matrix", "array"])
@pytest.mark.parametrize("fmt", SCIPY_FORMATS)
def test_from_scipy_every_format(kind, fmt, random_sparse):
    dense = random_sparse((12, 10), 0.35)
    source = SCIPY_CLASSES[kind][fmt](dense)
    assert_same_csr(CSRMatrix.from_scipy(source), dense)
    assert_same_csr(CSRMatrix(source), dense)


def _snapshot(matrix: sp.spmatrix) -> list[np.ndarray]:
    return [np.array(getattr(matrix, name), copy=True)
            for name in ("data", "indices", "indptr", "row", "col") if hasattr(matrix, name)]


@pytest.mark.parametrize("cls", [sp.csr_matrix, sp.csr_array, sp.csc_matrix, sp.coo_array])
def test_from_scipy_duplicates_and_unsorted(cls):
    # Entries (0, 2) twice and row 1 unsorted.
    data = np.array([1.0, 2.0, 5.0, 3.0, 4.0])
    major = np.array([0, 0, 0, 1, 1])
    minor = np.array([2, 0, 2, 3, 1])
    expected = np.zeros((2, 4))
    for value, i, j in zip(data, major, minor):
        expected[i, j] += value
    if cls in (sp.coo_array,):
        source = cls((data, (major, minor)), shape=(2, 4))
    else:
        indptr = np.array([0, 3, 5])
        if cls in (sp.csc_matrix,):
            expected = expected.T.copy()
            source = cls((data, minor, indptr), shape=(4, 2))
        else:
            source = cls((data, minor, indptr), shape=(2, 4))
    before = _snapshot(source)
    matrix = CSRMatrix.from_scipy(source)
    assert_same_csr(matrix, expected)
    for old, new in zip(before, _snapshot(source)):
        np.testing.assert_array_equal(old, new)  # the input is never modified


def test_from_scipy_keeps_explicit_zeros():
    source = sp.csr_array((np.array([0.0, 1.0]), np.array([0, 1]), np.array([0, 2])), shape=(1, 2))
    matrix = CSRMatrix.from_scipy(source)
    assert matrix.nnz == 2
    np.testing.assert_array_equal(matrix.data, [0.0, 1.0])


@pytest.mark.parametrize("dtype, expected", [(np.int8, np.float64), (np.int32, np.float64),
                                             (np.float32, np.float32), (np.bool_, np.float64)])
def test_from_scipy_dtype_rules(dtype, expected):
    assert CSRMatrix.from_scipy(sp.csr_array(np.eye(3, dtype=dtype))).dtype == expected


def test_from_scipy_rejects_complex_and_non_sparse():
    with pytest.raises(TypeError):
        CSRMatrix.from_scipy(sp.csr_array(np.eye(2, dtype=np.complex128)))
    with pytest.raises(TypeError, match="scipy.sparse"):
        CSRMatrix.from_scipy(np.eye(2))


def test_from_scipy_int64_indices():
    source = sp.csr_array(np.eye(5))
    source.indices = source.indices.astype(np.int64)
    source.indptr = source.indptr.astype(np.int64)
    assert_same_csr(CSRMatrix.from_scipy(source), np.eye(5))


# --- raw arrays and other constructors -------------------------------------------------------


def test_from_arrays_like_scipy():
    data, indices, indptr = [1.0, 2.0, 3.0], [0, 2, 1], [0, 2, 2, 3]
    matrix = CSRMatrix((data, indices, indptr), shape=(3, 3))
    expected = sp.csr_array((data, indices, indptr), shape=(3, 3)).toarray()
    assert_same_csr(matrix, expected)


@pytest.mark.parametrize("index_dtype", [np.int8, np.uint16, np.int32, np.uint32, np.int64,
                                         np.uint64])
def test_from_arrays_any_integer_index_dtype(index_dtype):
    indices, indptr = np.array([1, 0], index_dtype), np.array([0, 1, 2], index_dtype)
    matrix = CSRMatrix((np.ones(2), indices, indptr), shape=(2, 2))
    np.testing.assert_array_equal(matrix.to_dense(), [[0, 1], [1, 0]])


def test_from_arrays_read_only_inputs():
    arrays = [np.ones(2), np.array([0, 1]), np.array([0, 1, 2])]
    for array in arrays:
        array.flags.writeable = False
    matrix = CSRMatrix(tuple(arrays), shape=(2, 2))
    np.testing.assert_array_equal(matrix.to_dense(), np.eye(2))


def test_constructor_forms():
    base = CSRMatrix.from_dense(np.eye(3))
    assert CSRMatrix(base).shape == (3, 3)
    converted = CSRMatrix(base, dtype=np.float32)
    assert converted.dtype == np.float32
    with pytest.raises(ValueError, match="shape is required"):
        CSRMatrix((np.ones(1), [0], [0, 1]))
    with pytest.raises(TypeError, match="from_dense"):
        CSRMatrix(np.eye(3))
    with pytest.raises(TypeError):
        CSRMatrix([1, 2, 3])


def test_astype_is_cached():
    matrix = CSRMatrix.from_dense(np.eye(3))
    assert matrix.astype(np.float64) is matrix
    single = matrix.astype(np.float32)
    assert single.dtype == np.float32 and matrix.astype(np.float32) is single
    np.testing.assert_array_equal(single.to_dense(), np.eye(3))
    with pytest.raises(TypeError):
        matrix.astype(np.complex64)


# --- conversions back and properties -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_scipy_round_trip(dtype, random_sparse):
    dense = random_sparse((11, 8), 0.4, dtype)
    matrix = CSRMatrix.from_dense(dense)
    back = matrix.to_scipy()
    assert isinstance(back, sp.csr_array) and back.dtype == dtype and back.shape == (11, 8)
    np.testing.assert_array_equal(back.toarray(), dense)
    assert back.has_canonical_format
    back.data[:] = 42.0  # copies: editing the result leaves the matrix alone
    np.testing.assert_array_equal(matrix.to_dense(), dense)
    assert_same_csr(CSRMatrix.from_scipy(matrix.to_scipy()), dense)


def test_properties(random_sparse):
    dense = random_sparse((10, 20), 0.25, np.float32)
    matrix = CSRMatrix.from_dense(dense)
    nnz = int(np.count_nonzero(dense))
    assert matrix.shape == (10, 20) and matrix.ndim == 2 and matrix.nnz == nnz
    assert matrix.density == pytest.approx(nnz / 200)
    assert matrix.sparsity == pytest.approx(1 - nnz / 200)
    assert matrix.dtype == np.float32
    assert "10x20" in repr(matrix) and "float32" in repr(matrix)
    np.testing.assert_array_equal(matrix.toarray(), dense)
    assert matrix.to_dense().flags.c_contiguous


def test_exposed_arrays_are_read_only_and_outlive_the_matrix():
    matrix = CSRMatrix.from_dense(np.eye(3))
    data, indices, indptr = matrix.data, matrix.indices, matrix.indptr
    for array in (data, indices, indptr):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 5
        with pytest.raises(ValueError):
            array.flags.writeable = True
    del matrix
    gc.collect()
    np.testing.assert_array_equal(data, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(indptr, [0, 1, 2, 3])


def test_matrix_owns_copies_of_its_inputs():
    data, indices, indptr = np.ones(2), np.array([0, 1]), np.array([0, 1, 2])
    matrix = CSRMatrix((data, indices, indptr), shape=(2, 2))
    data[:] = 9.0
    indices[:] = 0
    np.testing.assert_array_equal(matrix.to_dense(), np.eye(2))
