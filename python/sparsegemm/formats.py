"""Sparse matrix formats that the kernels consume.

A format object owns validated copies of its arrays (checked once, when it is
built), so products never re-check indices and a malformed array can never
reach a kernel. The arrays it exposes are read-only views.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import _core
from ._dtypes import as_kernel_array, kernel_dtype

_CORE_CSR = {np.dtype(np.float32): _core.CsrMatrixF32, np.dtype(np.float64): _core.CsrMatrixF64}


def _as_index_array(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        if array.size == 0:
            return array.astype(np.int64)
        raise TypeError(f"{name} must have an integer dtype, got {array.dtype}")
    return array


def _check_shape(shape: Any) -> tuple[int, int]:
    try:
        # operator.index, not int(): 2.7 or "3" must not pass as a dimension.
        rows, cols = (operator.index(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair of integers, got {shape!r}") from None
    if rows < 0 or cols < 0:
        raise ValueError(f"shape must be non-negative, got {(rows, cols)}")
    if rows >= 2**31 or cols >= 2**31:
        raise ValueError(f"each dimension must be below 2**31, got {(rows, cols)}")
    return rows, cols


class CSRMatrix:
    """A compressed sparse row matrix of float32 or float64 values.

    Build one with :meth:`from_dense`, :meth:`from_scipy` or
    ``CSRMatrix((data, indices, indptr), shape=(M, K))`` as in scipy. Column
    indices are stored as int32 and row pointers as int64, so a matrix may hold
    more than 2**31 entries. :meth:`from_scipy` sums duplicates and sorts
    indices (on a copy); the ``(data, indices, indptr)`` form requires sorted,
    unique column indices in each row and names the first row that breaks it.

    NaN and Inf in stored entries propagate through products, as in
    scipy.sparse and torch.sparse. Entries that are not stored are structural
    zeros: they contribute nothing, so ``0 * inf`` never arises from them.
    """

    __slots__ = ("_handle", "_dtype", "_converted", "__weakref__")

    def __init__(self, arg: Any, shape: tuple[int, int] | None = None, *, dtype: Any = None):
        if isinstance(arg, CSRMatrix):
            source = arg.astype(dtype) if dtype is not None else arg
            self._set_handle(source._handle)
        elif sp.issparse(arg):
            self._set_handle(CSRMatrix.from_scipy(arg, dtype=dtype)._handle)
        elif isinstance(arg, tuple) and len(arg) == 3:
            if shape is None:
                raise ValueError("shape is required with (data, indices, indptr)")
            data, indices, indptr = arg
            self._set_handle(_build_handle(data, indices, indptr, shape, dtype))
        else:
            raise TypeError(
                "CSRMatrix() takes a scipy.sparse matrix, a CSRMatrix or (data, indices, indptr) "
                "with shape; use CSRMatrix.from_dense for a dense array"
            )

    def _set_handle(self, handle: Any) -> None:
        self._handle = handle
        self._dtype = np.dtype(np.float32 if isinstance(handle, _core.CsrMatrixF32) else np.float64)
        self._converted: dict[np.dtype, CSRMatrix] = {}

    @classmethod
    def _from_handle(cls, handle: Any) -> CSRMatrix:
        matrix = cls.__new__(cls)
        matrix._set_handle(handle)
        return matrix

    @classmethod
    def from_dense(cls, dense: Any, threshold: float = 0.0, *, dtype: Any = None) -> CSRMatrix:
        """Store the entries of a 2-d array with ``|a| > threshold``.

        The default threshold 0 keeps every nonzero. NaN entries are kept. Any
        memory order is accepted without a copy for float32/float64 input.
        """
        array = np.asarray(dense)
        if array.ndim != 2:
            raise ValueError(f"from_dense needs a 2-dimensional array, got shape {array.shape}")
        target = kernel_dtype(array.dtype) if dtype is None else kernel_dtype(dtype)
        threshold = float(threshold)
        if not threshold >= 0:
            raise ValueError(f"threshold must be a non-negative number, got {threshold}")
        _check_shape(array.shape)  # before any conversion copies a huge array
        array = as_kernel_array(array, target)
        return cls._from_handle(_CORE_CSR[target].from_dense(array, threshold))

    @classmethod
    def from_scipy(cls, matrix: Any, *, dtype: Any = None) -> CSRMatrix:
        """Convert any scipy.sparse matrix or array (COO, CSC, BSR, ...) to CSR.

        The input is never modified: duplicates are summed and indices sorted
        on a copy when needed. Explicitly stored zeros are kept.
        """
        if not sp.issparse(matrix):
            raise TypeError(f"from_scipy needs a scipy.sparse matrix, got {type(matrix).__name__}")
        if matrix.ndim != 2:
            raise ValueError(f"only 2-d sparse matrices are supported, got {matrix.ndim}-d")
        csr = matrix.tocsr()
        if not csr.has_canonical_format:
            csr = csr.copy() if csr is matrix else csr
            csr.sum_duplicates()
        return cls._from_handle(
            _build_handle(csr.data, csr.indices, csr.indptr, csr.shape, dtype)
        )

    def to_scipy(self) -> sp.csr_array:
        """A scipy ``csr_array`` holding copies of this matrix's arrays."""
        indptr = self.indptr
        index_dtype = np.int32 if indptr[-1] < 2**31 else np.int64
        return sp.csr_array(
            (self.data.copy(), self.indices.astype(index_dtype), indptr.astype(index_dtype)),
            shape=self.shape,
        )

    def to_dense(self) -> np.ndarray:
        """The matrix as a C-ordered dense array."""
        return self._handle.to_dense()

    def toarray(self) -> np.ndarray:
        """Alias of :meth:`to_dense`, as in scipy."""
        return self.to_dense()

    def astype(self, dtype: Any) -> CSRMatrix:
        """This matrix in float32 or float64 (cached; self if already that dtype)."""
        target = kernel_dtype(dtype)
        if target == self._dtype:
            return self
        if target not in self._converted:
            self._converted[target] = CSRMatrix._from_handle(
                _CORE_CSR[target].from_arrays(*self.shape, self.indptr, self.indices,
                                              self.data.astype(target))
            )
        return self._converted[target]

    @property
    def shape(self) -> tuple[int, int]:
        return (self._handle.rows, self._handle.cols)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return self._handle.nnz

    @property
    def density(self) -> float:
        """Stored entries over rows * cols (0 for an empty shape)."""
        rows, cols = self.shape
        return self.nnz / (rows * cols) if rows * cols else 0.0

    @property
    def sparsity(self) -> float:
        """1 - density."""
        return 1.0 - self.density

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def indptr(self) -> np.ndarray:
        """Row pointers, int64, read-only."""
        return self._handle.indptr

    @property
    def indices(self) -> np.ndarray:
        """Column indices, int32, read-only."""
        return self._handle.indices

    @property
    def data(self) -> np.ndarray:
        """Stored values, read-only."""
        return self._handle.data

    def __matmul__(self, other: Any) -> np.ndarray:
        from .ops import sparse_mm

        return sparse_mm(self, other)

    def __repr__(self) -> str:
        rows, cols = self.shape
        return (f"<CSRMatrix {rows}x{cols}, {self.nnz} stored ({self.density:.1%} dense), "
                f"dtype={self._dtype}>")


def _build_handle(data: Any, indices: Any, indptr: Any, shape: Any, dtype: Any) -> Any:
    rows, cols = _check_shape(shape)
    values = np.asarray(data)
    if values.ndim != 1:
        raise ValueError(f"data must be 1-dimensional, got shape {values.shape}")
    target = kernel_dtype(values.dtype if dtype is None else dtype)
    indices = _as_index_array(indices, "indices")
    indptr = _as_index_array(indptr, "indptr")
    if indices.size and (indices.min() < 0 or indices.max() >= cols):
        bad = int(indices.min()) if indices.min() < 0 else int(indices.max())
        raise ValueError(f"column index {bad} is out of range [0, {cols})")
    if indptr.dtype not in (np.int32, np.int64):
        if indptr.size and (indptr.min() < 0 or indptr.max() >= 2**63):
            raise ValueError("indptr entries must be in [0, 2**63)")
        indptr = indptr.astype(np.int64)
    return _CORE_CSR[target].from_arrays(
        rows,
        cols,
        np.require(indptr, requirements=["C", "A"]),
        np.require(indices, np.int32, ["C", "A"]),
        np.require(values, target, ["C", "A"]),
    )
