"""Malformed input ends in a clear ValueError/TypeError/MemoryError, never a crash.

Covers the public constructors and products and the private ``_core`` entry
points called directly (the Python layer must not be the only guard).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import sparsegemm
from sparsegemm import CSRMatrix, _core, linear, sparse_mm

I64_MAX = np.iinfo(np.int64).max

# (data, indices, indptr, shape, exception, message fragment)
MALFORMED_CSR = {
    "indptr_not_monotone": ([1.0, 2.0], [0, 1], [0, 2, 1, 2], (3, 2), ValueError, "non-decreasing"),
    "indptr_too_short": ([1.0], [0], [0, 1], (2, 2), ValueError, r"rows \+ 1"),
    "indptr_too_long": ([1.0], [0], [0, 1, 1, 1], (2, 2), ValueError, r"rows \+ 1"),
    "indptr_empty": ([], [], [], (0, 2), ValueError, r"rows \+ 1"),
    "indptr_negative": ([1.0], [0], [0, -1, 1], (2, 2), ValueError, "non-decreasing"),
    "indptr_not_from_zero": ([1.0], [0], [1, 1, 1], (2, 2), ValueError, r"indptr\[0\]"),
    "indptr_last_not_nnz": ([1.0, 2.0], [0, 1], [0, 1, 1], (2, 2), ValueError, r"indptr\[-1\]"),
    "indptr_last_beyond_nnz": ([1.0], [0], [0, 1, 5], (2, 2), ValueError, r"indptr\[-1\]"),
    "indptr_int64_max": ([1.0], [0], [0, I64_MAX, 1], (2, 2), ValueError, "exceeds"),
    "indptr_int64_min": ([1.0], [0], [0, -I64_MAX - 1, 1], (2, 2), ValueError, "non-decreasing"),
    "indptr_uint64_huge": ([1.0], [0], np.array([0, 2**63 + 5, 1], np.uint64), (2, 2), ValueError,
                           "2\\*\\*63"),
    "indptr_2d": ([1.0], [0], [[0, 1]], (1, 2), ValueError, "1-dimensional"),
    "indptr_float": ([1.0], [0], [0.0, 1.0], (1, 2), TypeError, "integer dtype"),
    "indptr_object": ([1.0], [0], np.array([0, 1], object), (1, 2), TypeError, "integer dtype"),
    "indices_out_of_range": ([1.0], [2], [0, 1], (1, 2), ValueError, "out of range"),
    "indices_negative": ([1.0], [-1], [0, 1], (1, 2), ValueError, "out of range"),
    "indices_huge": ([1.0], [2**40], [0, 1], (1, 2), ValueError, "out of range"),
    "indices_unsorted": ([1.0, 2.0], [1, 0], [0, 2], (1, 2), ValueError, "sorted"),
    "indices_duplicate": ([1.0, 2.0], [1, 1], [0, 2], (1, 2), ValueError, "unique"),
    "indices_float": ([1.0], [0.0], [0, 1], (1, 2), TypeError, "integer dtype"),
    "indices_object": ([1.0], np.array([0], object), [0, 1], (1, 2), TypeError, "integer dtype"),
    "indices_2d": ([1.0], [[0]], [0, 1], (1, 2), ValueError, "1-dimensional"),
    "data_longer": ([1.0, 2.0], [0], [0, 1], (1, 2), ValueError, "same length"),
    "data_shorter": ([], [0], [0, 1], (1, 2), ValueError, "same length"),
    "data_2d": ([[1.0]], [0], [0, 1], (1, 2), ValueError, "1-dimensional"),
    "data_complex": ([1j], [0], [0, 1], (1, 2), TypeError, "dtype"),
    "data_object": (np.array([1.0], object), [0], [0, 1], (1, 2), TypeError, "dtype"),
    "data_strings": (["a"], [0], [0, 1], (1, 2), TypeError, "dtype"),
    "shape_negative": ([], [], [0], (0, -1), ValueError, "non-negative"),
    "shape_rows_2_31": ([], [], [0], (2**31, 1), ValueError, "2\\*\\*31"),
    "shape_cols_2_31": ([], [], [0], (0, 2**31), ValueError, "2\\*\\*31"),
    "shape_huge": ([], [], [0], (2**70, 1), ValueError, "2\\*\\*31"),
    "shape_three_dims": ([], [], [0], (0, 1, 1), ValueError, "pair of integers"),
    "shape_not_integers": ([], [], [0], ("a", 1), ValueError, "pair of integers"),
    "shape_float": ([], [], [0, 0, 0], (2.7, 3), ValueError, "pair of integers"),
    "shape_string": ([], [], [0], (0, "3"), ValueError, "pair of integers"),
    "shape_none_pair": ([], [], [0], None, ValueError, "shape is required"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_CSR))
def test_malformed_csr_arrays(case):
    data, indices, indptr, shape, error, message = MALFORMED_CSR[case]
    with pytest.raises(error, match=message):
        CSRMatrix((data, indices, indptr), shape=shape)


def test_declared_rows_beyond_indptr_fail_before_allocating():
    # 2^31 - 1 rows would need a 16 GiB indptr: the length check must come first.
    with pytest.raises(ValueError, match="rows \\+ 1"):
        CSRMatrix((np.zeros(0), np.zeros(0, np.int32), np.zeros(2, np.int64)), shape=(2**31 - 1, 1))


def test_mutated_scipy_matrix_is_validated():
    source = sp.csr_matrix(np.eye(3))
    assert source.has_canonical_format  # cached: scipy will not look again
    source.indices[0] = 7
    with pytest.raises(ValueError, match="out of range"):
        CSRMatrix.from_scipy(source)
    source.indices[0] = 0
    source.indptr[1] = 3
    with pytest.raises(ValueError):
        CSRMatrix.from_scipy(source)


def test_unusual_but_valid_array_layouts(check_sparse_mm, check_linear):
    # Byte-swapped, misaligned and strided inputs are converted, not rejected.
    def misaligned(array):
        raw = np.zeros(array.nbytes + 1, np.uint8)[1:]
        view = raw.view(array.dtype).reshape(array.shape)
        view[...] = array
        assert not view.flags.aligned
        return view

    data = np.array([1.0, 2.0, 3.0])
    indices = np.array([0, 2, 1], np.int32)
    indptr = np.array([0, 2, 3], np.int64)
    expected = sp.csr_array((data, indices, indptr), shape=(2, 3)).toarray()
    for build in (lambda a: a.astype(a.dtype.newbyteorder(">")), misaligned,
                  lambda a: np.repeat(a, 2)[::2]):
        matrix = CSRMatrix((build(data), build(indices), build(indptr)), shape=(2, 3))
        np.testing.assert_array_equal(matrix.to_dense(), expected)
        b = build(np.arange(6.0)).reshape(3, 2)
        check_sparse_mm(sparse_mm(matrix, b), expected, b)
        check_linear(linear(b.T, matrix, build(np.ones(2))), b.T, expected, np.ones(2))
        np.testing.assert_array_equal(CSRMatrix.from_dense(build(expected.ravel()).reshape(2, 3))
                                      .to_dense(), expected)
    out = misaligned(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="aligned"):
        sparse_mm(CSRMatrix.from_dense(expected), np.ones((3, 2)), out=out)


# --- huge requests -----------------------------------------------------------------------------


def test_huge_dense_result_fails_before_allocating():
    # 2^20 x (2^31 - 1) doubles is 16 PiB: the allocation must fail cleanly.
    matrix = CSRMatrix((np.zeros(0), np.zeros(0, np.int32), np.zeros(2**20 + 1, np.int64)),
                       shape=(2**20, 2**31 - 1))
    with pytest.raises((MemoryError, ValueError)):
        matrix.to_dense()


def test_huge_dense_input_rejected_before_conversion():
    # A 2^31-row float32 view of one element: converting it to float64 first
    # would allocate 32 GiB before the dimension check.
    view = np.broadcast_to(np.float32(1.0), (2**31, 2))
    with pytest.raises(ValueError, match="2\\*\\*31"):
        CSRMatrix.from_dense(view)


def test_huge_products_fail_before_allocating():
    matrix = CSRMatrix.from_dense(np.ones((2**20, 3)))
    wide_b = np.broadcast_to(np.ones(1), (3, 2**40))  # a 24 TiB view of one element
    with pytest.raises((MemoryError, ValueError)):
        sparse_mm(matrix, wide_b)
    tall_x = np.broadcast_to(np.ones(3), (2**40, 3))
    with pytest.raises((MemoryError, ValueError)):
        linear(tall_x, matrix)


def test_zero_stride_operands_are_read_in_place(check_sparse_mm):
    # A (1 x 2^31-1) matrix times a broadcast (2^31-1 x 2) operand: no copy of B.
    k = 2**31 - 1
    matrix = CSRMatrix((np.array([2.0, 3.0]), np.array([0, k - 1]), np.array([0, 2])), shape=(1, k))
    b = np.broadcast_to(np.array([1.0, -1.0]), (k, 2))
    np.testing.assert_array_equal(sparse_mm(matrix, b), [[5.0, -5.0]])


# --- the private _core entry points, called directly -------------------------------------------

F64 = _core.CsrMatrixF64
GOOD_A = F64.from_dense(np.eye(3), 0.0)


def _read_only(shape):
    array = np.zeros(shape)
    array.flags.writeable = False
    return array


CORE_CALLS = {
    "from_arrays_indptr_float": (lambda: F64.from_arrays(1, 1, np.zeros(2), np.zeros(0, np.int32),
                                                         np.zeros(0)), TypeError),
    "from_arrays_indptr_2d": (lambda: F64.from_arrays(1, 1, np.zeros((1, 2), np.int64),
                                                      np.zeros(0, np.int32), np.zeros(0)),
                              ValueError),
    "from_arrays_indptr_strided": (lambda: F64.from_arrays(2, 1, np.zeros(6, np.int64)[::2],
                                                           np.zeros(0, np.int32), np.zeros(0)),
                                   ValueError),
    "from_arrays_indices_int64": (lambda: F64.from_arrays(1, 1, np.array([0, 1]), np.array([0]),
                                                          np.ones(1)), TypeError),
    "from_arrays_data_float32": (lambda: F64.from_arrays(1, 1, np.array([0, 1]),
                                                         np.array([0], np.int32),
                                                         np.ones(1, np.float32)), TypeError),
    "from_arrays_negative_rows": (lambda: F64.from_arrays(-1, 1, np.zeros(0, np.int64),
                                                          np.zeros(0, np.int32), np.zeros(0)),
                                  ValueError),
    "from_arrays_huge_rows": (lambda: F64.from_arrays(2**62, 1, np.zeros(1, np.int64),
                                                      np.zeros(0, np.int32), np.zeros(0)),
                              ValueError),
    "from_arrays_rows_overflow": (lambda: F64.from_arrays(2**64, 1, np.zeros(1, np.int64),
                                                          np.zeros(0, np.int32), np.zeros(0)),
                                  TypeError),
    "from_arrays_indptr_last_huge": (lambda: F64.from_arrays(1, 1, np.array([0, 2**40]),
                                                             np.array([0], np.int32), np.ones(1)),
                                     ValueError),
    "from_arrays_int32_indptr_bad": (lambda: F64.from_arrays(2, 2, np.array([0, 2, 1], np.int32),
                                                             np.array([0], np.int32), np.ones(1)),
                                     ValueError),
    "from_dense_1d": (lambda: F64.from_dense(np.ones(3), 0.0), ValueError),
    "from_dense_wrong_dtype": (lambda: F64.from_dense(np.ones((2, 2), np.float32), 0.0), TypeError),
    "from_dense_negative_strides": (lambda: F64.from_dense(np.ones((2, 2))[::-1], 0.0), ValueError),
    "from_dense_byteswapped": (lambda: F64.from_dense(np.ones((2, 2), ">f8"), 0.0), TypeError),
    "from_dense_list": (lambda: F64.from_dense([[1.0]], 0.0), TypeError),
    "matmul_wrong_dtype": (lambda: _core.csr_matmul(GOOD_A, np.ones((3, 2), np.float32),
                                                    np.empty((3, 2))), TypeError),
    "matmul_wrong_ndim": (lambda: _core.csr_matmul(GOOD_A, np.ones(3), np.empty((3, 1))),
                          ValueError),
    "matmul_negative_strides": (lambda: _core.csr_matmul(GOOD_A, np.ones((3, 2))[::-1],
                                                         np.empty((3, 2))), ValueError),
    "matmul_read_only_out": (lambda: _core.csr_matmul(GOOD_A, np.ones((3, 2)), _read_only((3, 2))),
                             ValueError),
    "matmul_wrong_out_shape": (lambda: _core.csr_matmul(GOOD_A, np.ones((3, 2)), np.empty((2, 3))),
                               ValueError),
    "matmul_fortran_out": (lambda: _core.csr_matmul(GOOD_A, np.ones((3, 2)),
                                                    np.empty((3, 2), order="F")), ValueError),
    "matmul_negative_out": (lambda: _core.csr_matmul(GOOD_A, np.ones((3, 2)),
                                                     np.empty((3, 2))[::-1]), ValueError),
    "matmul_shape_mismatch": (lambda: _core.csr_matmul(GOOD_A, np.ones((4, 2)), np.empty((3, 2))),
                              ValueError),
    "matmul_bias_length": (lambda: _core.csr_matmul(GOOD_A, np.ones((3, 2)), np.empty((3, 2)),
                                                    np.ones(2)), ValueError),
    "matmul_bias_strided": (lambda: _core.csr_matmul(GOOD_A, np.ones((3, 2)), np.empty((3, 2)),
                                                     np.ones(6)[::2]), ValueError),
    "matmul_bias_dtype": (lambda: _core.csr_matmul(GOOD_A, np.ones((3, 2)), np.empty((3, 2)),
                                                   np.ones(3, np.float32)), TypeError),
    "matmul_none_operand": (lambda: _core.csr_matmul(GOOD_A, None, np.empty((3, 2))), TypeError),
    "matmul_none_matrix": (lambda: _core.csr_matmul(None, np.ones((3, 2)), np.empty((3, 2))),
                           TypeError),
    "matmul_threads_overflow": (lambda: _core.csr_matmul(GOOD_A, np.ones((3, 2)), np.empty((3, 2)),
                                                         None, 2**40), TypeError),
    "linear_fortran_x": (lambda: _core.csr_linear(GOOD_A, np.ones((2, 3), order="F"),
                                                  np.empty((2, 3))), ValueError),
    "linear_negative_x": (lambda: _core.csr_linear(GOOD_A, np.ones((2, 3))[::-1], np.empty((2, 3))),
                          ValueError),
    "linear_wrong_out_shape": (lambda: _core.csr_linear(GOOD_A, np.ones((2, 3)), np.empty((3, 2))),
                               ValueError),
    "linear_read_only_out": (lambda: _core.csr_linear(GOOD_A, np.ones((2, 3)), _read_only((2, 3))),
                             ValueError),
    "linear_wrong_ndim": (lambda: _core.csr_linear(GOOD_A, np.ones((2, 3, 1)), np.empty((2, 3))),
                          ValueError),
    "linear_wrong_dtype": (lambda: _core.csr_linear(GOOD_A, np.ones((2, 3), np.float32),
                                                    np.empty((2, 3))), TypeError),
    "linear_shape_mismatch": (lambda: _core.csr_linear(GOOD_A, np.ones((2, 4)), np.empty((2, 3))),
                              ValueError),
    "set_isa_unknown": (lambda: _core.set_active_isa("sse9000"), ValueError),
    "set_isa_none": (lambda: _core.set_active_isa(None), TypeError),
}


@pytest.mark.parametrize("case", sorted(CORE_CALLS))
def test_core_entry_points_reject_bad_arguments(case):
    call, error = CORE_CALLS[case]
    with pytest.raises(error):
        call()


def test_core_rejects_misaligned_arrays():
    raw = np.zeros(6 * 8 + 1, np.uint8)[1:].view(np.float64).reshape(3, 2)
    assert not raw.flags.aligned
    with pytest.raises(ValueError, match="aligned"):
        _core.csr_matmul(GOOD_A, raw, np.empty((3, 2)))
    with pytest.raises(ValueError, match="aligned"):
        _core.csr_matmul(GOOD_A, np.ones((3, 2)), raw)
    with pytest.raises(ValueError, match="aligned"):
        F64.from_dense(raw, 0.0)


def test_core_empty_operands_need_no_strides():
    # numpy may give empty arrays zero strides; they must not be taken for Fortran order.
    empty_a = F64.from_dense(np.zeros((0, 3)), 0.0)
    _core.csr_matmul(empty_a, np.ones((3, 7)), np.empty((0, 7)))
    _core.csr_linear(GOOD_A, np.empty((0, 3)), np.empty((0, 3)))


def test_csr_only_products_reject_bsr_with_a_clear_error():
    weight = sparsegemm.BSRMatrix.from_dense(np.eye(8), blocksize=(4, 1))
    with pytest.raises(TypeError, match="needs a CSRMatrix"):
        sparsegemm.sddmm(weight, np.ones((8, 2)), np.ones((8, 2)))
    with pytest.raises(TypeError, match="needs a CSRMatrix"):
        sparsegemm.conv2d(np.ones((1, 8, 3, 3)), weight, 1)
