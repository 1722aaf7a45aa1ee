"""Pattern-only matrices (``CSRMatrix.pattern``, ``BSRMatrix.pattern``,
``BitmapMatrix.pattern``): the structure without values, for products given
``values=``. They must multiply exactly as the full matrix, store no values,
and refuse whatever would read stored values."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from sparsegemm import BitmapMatrix, BSRMatrix, CSRMatrix, _core

PATTERN_ONLY = "holds only a sparsity pattern"


def _dense(rng, shape, dtype, density=0.4):
    return (rng.standard_normal(shape) * (rng.random(shape) < density)).astype(dtype)


def _csr_pair(dense):
    full = CSRMatrix.from_dense(dense)
    return full, CSRMatrix.pattern(full.indptr, full.indices, full.shape, full.dtype)


def _bsr_pair(dense, blocksize=(4, 2)):
    full = BSRMatrix.from_dense(dense, blocksize)
    return full, BSRMatrix.pattern(full.indptr, full.indices, full.shape, blocksize, full.dtype)


def _bitmap_pair(dense, dtype=None):
    full = BitmapMatrix.from_dense(dense, dtype=dtype)
    return full, BitmapMatrix.pattern(full.bits, full.shape, full.value_dtype)


PAIRS = {"csr": _csr_pair, "bsr": _bsr_pair, "bitmap": _bitmap_pair}
KERNELS = {"csr": (_core.csr_linear, _core.csr_matmul),
           "bsr": (_core.bsr_linear, _core.bsr_matmul),
           "bitmap": (_core.bitmap_linear, _core.bitmap_matmul)}


def _values(full):
    return np.ascontiguousarray(full._handle.data)


def _products(kernels, handle, x, b, values):
    linear, matmul = kernels
    rows = handle.rows
    y = np.empty((x.shape[0], rows), x.dtype)
    c = np.empty((rows, b.shape[1]), b.dtype)
    linear(handle, x, y, None, 1, values)
    matmul(handle, b, c, None, 1, values)
    return y, c


@pytest.mark.parametrize("fmt", list(PAIRS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0, 0), (1, 1), (9, 70), (33, 17)])
@pytest.mark.parametrize("batch", [1, 5, 40])
def test_products_match_the_full_matrix(rng, fmt, dtype, shape, batch):
    full, pattern = PAIRS[fmt](_dense(rng, shape, dtype))
    assert not pattern.has_values and full.has_values
    assert (pattern.shape, pattern.nnz, pattern.dtype) == (full.shape, full.nnz, full.dtype)
    x = rng.standard_normal((batch, shape[1])).astype(dtype)
    b = rng.standard_normal((shape[1], batch)).astype(dtype)
    expected = _products(KERNELS[fmt], full._handle, x, b, None)
    got = _products(KERNELS[fmt], pattern._handle, x, b, _values(full))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("batch", [1, 7])
def test_bfloat16_bitmap_products_match(rng, batch):
    full, pattern = _bitmap_pair(_dense(rng, (21, 130), np.float32), "bfloat16")
    assert pattern.value_dtype == "bfloat16" and pattern.nnz == full.nnz
    x = rng.standard_normal((batch, 130)).astype(np.float32)
    b = rng.standard_normal((130, batch)).astype(np.float32)
    expected = _products(KERNELS["bitmap"], full._handle, x, b, None)
    got = _products(KERNELS["bitmap"], pattern._handle, x, b, _values(full))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("fmt", list(PAIRS))
def test_stores_no_values(rng, fmt):
    full, pattern = PAIRS[fmt](_dense(rng, (40, 100), np.float64))
    value_bytes = full.nnz * 8
    assert full.nbytes - pattern.nbytes == value_bytes > 0
    assert "pattern only" in repr(pattern) and "pattern only" not in repr(full)


@pytest.mark.parametrize("fmt", list(PAIRS))
def test_refuses_to_read_values(rng, fmt):
    full, pattern = PAIRS[fmt](_dense(rng, (12, 20), np.float32))
    with pytest.raises(ValueError, match=PATTERN_ONLY):
        pattern.data  # noqa: B018
    with pytest.raises(ValueError, match=PATTERN_ONLY):
        pattern.to_dense()
    with pytest.raises(ValueError, match=PATTERN_ONLY):
        pattern @ np.ones((20, 3), np.float32)
    with pytest.raises(ValueError, match=PATTERN_ONLY):
        np.ones((3, 12), np.float32) @ pattern
    linear, matmul = KERNELS[fmt]
    with pytest.raises(ValueError, match=PATTERN_ONLY):
        linear(pattern._handle, np.ones((2, 20), np.float32), np.empty((2, 12), np.float32))
    with pytest.raises(ValueError, match=PATTERN_ONLY):
        matmul(pattern._handle, np.ones((20, 2), np.float32), np.empty((12, 2), np.float32))
    with pytest.raises(ValueError, match="values must have"):
        linear(pattern._handle, np.ones((2, 20), np.float32), np.empty((2, 12), np.float32),
               None, 1, np.ones(full._handle.data.size + 1, full._handle.data.dtype))


def test_conv_refuses_a_pattern_without_values(rng):
    _, pattern = _csr_pair(_dense(rng, (4, 2 * 3 * 3), np.float32))
    x = np.ones((1, 2, 5, 5), np.float32)
    with pytest.raises(ValueError, match=PATTERN_ONLY):
        _core.csr_conv2d(pattern._handle, x, np.empty((1, 4, 3, 3), np.float32), [3, 3], [1, 1],
                         [0, 0], [1, 1], None, 1, None)


@pytest.mark.parametrize("fmt", ["csr", "bsr"])
def test_transpose_keeps_the_permutation(rng, fmt):
    full, pattern = PAIRS[fmt](_dense(rng, (13, 22), np.float64))
    full_t, full_perm = full.transpose_with_permutation()
    pattern_t, perm = pattern.transpose_with_permutation()
    np.testing.assert_array_equal(perm, full_perm)
    assert not pattern_t.has_values and pattern_t.shape == full_t.shape
    np.testing.assert_array_equal(pattern_t.indptr, full_t.indptr)
    np.testing.assert_array_equal(pattern_t.indices, full_t.indices)
    assert pattern_t.nnz == full_t.nnz


@pytest.mark.parametrize("fmt", ["csr", "bitmap"])
def test_with_data_gives_a_full_matrix(rng, fmt):
    full, pattern = PAIRS[fmt](_dense(rng, (10, 70), np.float32))
    rebuilt = pattern.with_data(full.data)
    assert rebuilt.has_values
    np.testing.assert_array_equal(rebuilt.to_dense(), full.to_dense())


@pytest.mark.parametrize("fmt", list(PAIRS))
def test_copy_and_pickle_keep_the_pattern(rng, fmt):
    full, pattern = PAIRS[fmt](_dense(rng, (9, 33), np.float64))
    for clone in (pattern.copy(), copy.deepcopy(pattern), pickle.loads(pickle.dumps(pattern))):
        assert type(clone) is type(pattern) and not clone.has_values
        assert (clone.shape, clone.nnz, clone.dtype) == (pattern.shape, pattern.nnz, pattern.dtype)
        np.testing.assert_array_equal(clone.indptr if fmt != "bitmap" else clone.bits,
                                      pattern.indptr if fmt != "bitmap" else pattern.bits)


def test_pattern_is_validated():
    with pytest.raises(ValueError, match="column index 5 is out of range"):
        CSRMatrix.pattern(np.array([0, 1]), np.array([5]), (1, 5))
    with pytest.raises(ValueError, match="sorted and unique"):
        CSRMatrix.pattern(np.array([0, 2]), np.array([1, 1]), (1, 5))
    with pytest.raises(ValueError, match=r"indptr\[-1\] must equal"):
        CSRMatrix.pattern(np.array([0, 3]), np.array([1, 2]), (1, 5))
    with pytest.raises(ValueError, match="invalid BSR block structure"):
        BSRMatrix.pattern(np.array([0, 1]), np.array([0]), (8, 4), (4, 4))
    with pytest.raises(ValueError, match="blocksize must be"):
        BSRMatrix.pattern(np.array([0, 0]), np.array([], np.int32), (4, 4), (0, 4))
    with pytest.raises(ValueError, match="bit set past the last column"):
        BitmapMatrix.pattern(np.array([[1 << 10]], np.uint64), (1, 10))
    with pytest.raises(ValueError, match="bits must have shape"):
        BitmapMatrix.pattern(np.zeros((2, 1), np.uint64), (1, 10))
    with pytest.raises(TypeError):
        CSRMatrix.pattern(np.array([0, 1]), np.array([0.5]), (1, 5))
