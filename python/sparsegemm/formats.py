"""Sparse matrix formats that the kernels consume.

A format object owns validated copies of its arrays (checked once, when it is
built), so products never re-check indices and a malformed array can never
reach a kernel. The arrays it exposes are read-only views.

Each format's ``pattern`` classmethod builds a pattern-only matrix: the
structure without values, for a caller that owns the values and passes them
to every product (``values=`` of the ``_core`` products, as the torch modules
do). It stores no value array; what would read stored values (``data``,
``to_dense``, a product without ``values=``) raises ValueError.
"""

from __future__ import annotations

import operator
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from . import _core
from ._dtypes import (
    BFLOAT16,
    as_kernel_array,
    bfloat16_to_float32,
    compute_dtype,
    stored_value_array,
    stored_value_dtype,
)

_CORE_CSR: dict[Any, Any] = {
    np.dtype(np.float32): _core.CsrMatrixF32,
    np.dtype(np.float64): _core.CsrMatrixF64,
    BFLOAT16: _core.CsrMatrixBF16,
}
_CORE_BSR: dict[Any, Any] = {
    np.dtype(np.float32): _core.BsrMatrixF32,
    np.dtype(np.float64): _core.BsrMatrixF64,
    BFLOAT16: _core.BsrMatrixBF16,
}
_CORE_BITMAP: dict[Any, Any] = {
    np.dtype(np.float32): _core.BitmapMatrixF32,
    np.dtype(np.float64): _core.BitmapMatrixF64,
    BFLOAT16: _core.BitmapMatrixBF16,
}


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


def _dense_operand(dense: Any, dtype: Any) -> tuple[np.ndarray, Any]:
    """A 2-d array in its kernel dtype with strides the core accepts (copies only if needed),
    and the value dtype to store (a kernel dtype or ``'bfloat16'``, built from float32)."""
    array = np.asarray(dense)
    if array.ndim != 2:
        raise ValueError(f"from_dense needs a 2-dimensional array, got shape {array.shape}")
    target = stored_value_dtype(array.dtype if dtype is None else dtype)
    _check_shape(array.shape)  # before any conversion copies a huge array
    return as_kernel_array(array, compute_dtype(target)), target


def _check_threshold(threshold: Any) -> float:
    threshold = float(threshold)
    if not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold}")
    return threshold


def _checked_index_arrays(
    indices: Any, indptr: Any, index_limit: int, what: str = "column index"
) -> tuple[np.ndarray, np.ndarray]:
    """indices as contiguous int32 (checked to lie in [0, index_limit) before the
    cast) and indptr as contiguous int32/int64; the core checks the rest."""
    indices = _as_index_array(indices, "indices")
    indptr = _as_index_array(indptr, "indptr")
    if indices.size and (indices.min() < 0 or indices.max() >= index_limit):
        bad = int(indices.min()) if indices.min() < 0 else int(indices.max())
        raise ValueError(f"{what} {bad} is out of range [0, {index_limit})")
    if indptr.dtype not in (np.int32, np.int64):
        if indptr.size and (indptr.min() < 0 or indptr.max() >= 2**63):
            raise ValueError("indptr entries must be in [0, 2**63)")
        indptr = indptr.astype(np.int64)
    return np.require(indices, np.int32, ["C", "A"]), np.require(indptr, requirements=["C", "A"])


class MatrixShape:
    """``shape``, ``ndim``, ``density`` and ``sparsity`` of a matrix whose core handle
    has ``rows`` and ``cols`` and which counts its stored entries in ``nnz``."""

    __slots__ = ()
    _handle: Any

    @property
    def nnz(self) -> int:
        """Stored entries (the subclass's count)."""
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        return (self._handle.rows, self._handle.cols)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def density(self) -> float:
        """Stored entries over rows * cols (0 for an empty shape)."""
        rows, cols = self.shape
        return self.nnz / (rows * cols) if rows * cols else 0.0

    @property
    def sparsity(self) -> float:
        """1 - density."""
        return 1.0 - self.density


class SparseFormat(MatrixShape):
    """What every sparsegemm format shares: a validated C++ handle of one dtype.

    Subclasses set ``_CORE`` (dtype -> C++ class) and implement ``nnz``,
    ``_stored_values``, ``_with_values``, ``_reduce_values`` and ``_reduce_pattern``.
    """

    __slots__ = ("__weakref__", "_converted", "_dtype", "_handle", "_shape", "_transpose_of")
    _CORE: ClassVar[dict[Any, Any]] = {}
    # numpy hands ``ndarray @ A`` to A.__rmatmul__ instead of making A an object array.
    __array_ufunc__ = None

    def _set_handle(self, handle: Any) -> None:
        self._handle = handle
        # kept, not read from the handle each time: every product call checks it
        self._shape = (handle.rows, handle.cols)
        self._dtype = next(dt for dt, cls in self._CORE.items() if isinstance(handle, cls))
        self._converted: dict[Any, Any] = {}  # value dtype (or "bfloat16") -> matrix
        self._transpose_of: Any = None  # set on a transpose: the matrix it came from

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @classmethod
    def _from_handle(cls, handle: Any) -> Any:
        matrix = cls.__new__(cls)
        matrix._set_handle(handle)
        return matrix

    def _stored_values(self) -> np.ndarray:
        """Every stored value (explicit zeros and block padding included)."""
        raise NotImplementedError

    def _storage_nbytes(self) -> int:
        """Bytes the C++ core keeps for this matrix: values (if stored), indices and pointers."""
        return int(self._handle.storage_bytes)

    @property
    def nbytes(self) -> int:
        """Bytes of storage: values (none for a pattern-only matrix), indices and pointers."""
        return self._storage_nbytes()

    @property
    def has_values(self) -> bool:
        """False for a pattern-only matrix (see the format's ``pattern``)."""
        return bool(self._handle.has_values)

    def _with_values(self, dtype: Any) -> Any:
        """A copy of this matrix with its values cast to ``dtype``."""
        raise NotImplementedError

    def to_dense(self) -> np.ndarray:
        """The matrix as a C-ordered dense array."""
        return self._handle.to_dense()

    def toarray(self) -> np.ndarray:
        """Alias of :meth:`to_dense`, as in scipy."""
        return self.to_dense()

    def todense(self) -> np.ndarray:
        """Alias of :meth:`to_dense`: an ndarray, as scipy's sparse arrays return."""
        return self.to_dense()

    def copy(self) -> Any:
        """An independent copy (the arrays are copied and validated again)."""
        rebuild, arguments = self._reduce()
        return rebuild(*arguments)

    def _reduce(self) -> tuple[Any, tuple[Any, ...]]:
        """(callable, arguments): what pickling and :meth:`copy` rebuild from."""
        return self._reduce_values() if self.has_values else self._reduce_pattern()

    def _reduce_values(self) -> tuple[Any, tuple[Any, ...]]:
        """:meth:`_reduce` of a matrix holding values."""
        raise NotImplementedError

    def _reduce_pattern(self) -> tuple[Any, tuple[Any, ...]]:
        """:meth:`_reduce` of a pattern-only matrix: its ``pattern`` call."""
        raise NotImplementedError

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self._reduce()

    def transpose(self) -> Any:
        """The transpose, as a new matrix of this format (K x M)."""
        transposed = self.transpose_with_permutation()[0]
        transposed._transpose_of = self
        return transposed

    def transpose_with_permutation(self) -> tuple[Any, np.ndarray]:
        raise NotImplementedError

    @property
    def T(self) -> Any:  # numpy's name
        return self.transpose()

    def astype(self, dtype: Any) -> Any:
        """This matrix with float32, float64 or ``'bfloat16'`` values (cached; self if
        already so)."""
        target = stored_value_dtype(dtype)
        if target == self._dtype:
            return self
        if target not in self._converted:
            self._converted[target] = self._with_values(target)
        return self._converted[target]

    @property
    def dtype(self) -> np.dtype:
        """The dtype products compute in and return: float32 for bfloat16 values."""
        return compute_dtype(self._dtype)

    @property
    def value_dtype(self) -> Any:
        """The stored values' dtype: float32, float64 or the string ``'bfloat16'``."""
        return self._dtype

    def _float_values(self, stored: np.ndarray) -> np.ndarray:
        """``stored`` values (this matrix's value dtype) as floats: bfloat16 widened to
        float32, exactly."""
        return bfloat16_to_float32(stored) if self._dtype == BFLOAT16 else stored

    @property
    def bytes_per_nonzero(self) -> float:
        """Bytes of storage (values, indices, pointers) per nonzero value stored.

        Explicitly stored zeros (such as the zero fill of BSR blocks) cost
        storage but are not nonzeros. 0.0 when no nonzero is stored.
        """
        nonzeros = int(np.count_nonzero(self._stored_values()))
        return self._storage_nbytes() / nonzeros if nonzeros else 0.0

    def __matmul__(self, other: Any) -> np.ndarray:
        """``A @ B`` for a dense ``B`` (K x N or K,); a dense ndarray comes back.

        sparse @ sparse (another sparsegemm format or a scipy.sparse matrix)
        raises TypeError: the kernels need one dense operand. Use
        ``A.to_scipy() @ B`` for a sparse result, or densify one side.
        """
        from .ops import sparse_mm

        _refuse_sparse_product(self, other)
        return sparse_mm(self, other)

    def __rmatmul__(self, other: Any) -> np.ndarray:
        """``X @ A`` for a dense ``X`` (..., M): as ``sparsegemm.linear(X, A.T)``, so
        ``x @ W.T`` is the ``F.linear`` form and reuses ``W`` itself."""
        from .ops import linear

        _refuse_sparse_product(other, self)
        weight = self._transpose_of if self._transpose_of is not None else self.transpose()
        return linear(other, weight)


def _refuse_sparse_product(left: Any, right: Any) -> None:
    if all(isinstance(m, SparseFormat) or sp.issparse(m) for m in (left, right)):
        raise TypeError(
            f"sparse @ sparse is not supported ({type(left).__name__} @ {type(right).__name__}): "
            "sparsegemm multiplies a sparse matrix with a dense one. Convert with .to_scipy() "
            "for a sparse product, or densify one side with .toarray()"
        )


class CSRMatrix(SparseFormat):
    """A compressed sparse row matrix of float32, float64 or bfloat16 values.

    Build one with :meth:`from_dense`, :meth:`from_scipy` or
    ``CSRMatrix((data, indices, indptr), shape=(M, K))`` as in scipy. Column
    indices are stored as int32 and row pointers as int64, so a matrix may hold
    more than 2**31 entries. :meth:`from_scipy` sums duplicates and sorts
    indices (on a copy); the ``(data, indices, indptr)`` form requires sorted,
    unique column indices in each row and names the first row that breaks it.

    NaN and Inf in stored entries propagate through products, as in
    scipy.sparse and torch.sparse. Entries that are not stored are structural
    zeros: they contribute nothing, so ``0 * inf`` never arises from them.

    ``dtype="bfloat16"`` stores the values as bfloat16, as
    :class:`BitmapMatrix` describes: 4 bytes per entry with 16-bit column
    indices instead of 6, :attr:`data` as uint16 bit patterns, float32
    products (the kernels widen each value as they load it).
    """

    __slots__ = ()
    _CORE = _CORE_CSR

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

    @classmethod
    def from_dense(cls, dense: Any, threshold: float = 0.0, *, dtype: Any = None) -> CSRMatrix:
        """Store the entries of a 2-d array with ``|a| > threshold``.

        The default threshold 0 keeps every nonzero. NaN entries are kept. Any
        memory order is accepted without a copy for float32/float64 input.
        With ``dtype="bfloat16"`` each entry is rounded to bfloat16 first and the
        threshold applies to the rounded value (what rounds to zero is not stored).
        """
        array, target = _dense_operand(dense, dtype)
        threshold = _check_threshold(threshold)
        return cls._from_handle(_CORE_CSR[target].from_dense(array, threshold))

    @classmethod
    def from_scipy(cls, matrix: Any, *, dtype: Any = None) -> CSRMatrix:
        """Convert any scipy.sparse matrix or array (COO, CSC, BSR, ...) to CSR.

        The input is never modified: duplicates are summed and indices sorted
        on a copy when needed. Explicitly stored zeros are kept.
        """
        _check_scipy(matrix)
        csr = matrix.tocsr()
        if not csr.has_canonical_format:
            csr = csr.copy() if csr is matrix else csr
            csr.sum_duplicates()
        return cls._from_handle(
            _build_handle(csr.data, csr.indices, csr.indptr, csr.shape, dtype)
        )

    @classmethod
    def pattern(cls, indptr: Any, indices: Any, shape: tuple[int, int],
                dtype: Any = np.float32) -> CSRMatrix:
        """A pattern-only matrix: validated ``indptr`` and ``indices`` (as for
        ``(data, indices, indptr)``) and no values, for products given ``values=``
        (for ``dtype="bfloat16"``, uint16 bit patterns)."""
        rows, cols = _check_shape(shape)
        indices, indptr = _checked_index_arrays(indices, indptr, cols)
        return cls._from_handle(
            _CORE_CSR[stored_value_dtype(dtype)].pattern_from_arrays(rows, cols, indptr, indices)
        )

    def to_scipy(self) -> sp.csr_array:
        """A scipy ``csr_array`` holding copies of this matrix's arrays."""
        indptr = self.indptr
        index_dtype = np.int32 if indptr[-1] < 2**31 else np.int64
        return sp.csr_array(
            (np.array(self._stored_values()), self.indices.astype(index_dtype),
             indptr.astype(index_dtype)),
            shape=self.shape,
        )

    def _with_values(self, dtype: Any) -> CSRMatrix:
        return CSRMatrix._from_handle(
            _CORE_CSR[dtype].from_arrays(*self.shape, self.indptr, self.indices,
                                         stored_value_array(self._stored_values(), dtype))
        )

    def _reduce_values(self) -> tuple[Any, tuple[Any, ...]]:
        return (_with_value_dtype,
                (CSRMatrix, (self.data, self.indices, self.indptr), self.shape, self._dtype))

    def _reduce_pattern(self) -> tuple[Any, tuple[Any, ...]]:
        return (CSRMatrix.pattern, (self.indptr, self.indices, self.shape, self._dtype))

    def transpose_with_permutation(self) -> tuple[CSRMatrix, np.ndarray]:
        """The transpose and the int64 permutation ``p`` with ``T.data == self.data[p]``.

        With ``p``, values that change while the pattern stays fixed (fine-tuning)
        are transposed by ``T.with_data(new_values[p])`` without rebuilding.
        """
        handle, permutation = self._handle.transposed()
        return CSRMatrix._from_handle(handle), permutation

    def with_data(self, data: Any) -> CSRMatrix:
        """A matrix with this sparsity pattern (shared, not copied) and new values (for
        bfloat16, uint16 bit patterns or floats to round)."""
        values = stored_value_array(np.asarray(data), self._dtype)
        if values.shape != (self.nnz,):
            raise ValueError(f"data must have shape ({self.nnz},), got {values.shape}")
        return CSRMatrix._from_handle(self._handle.with_values(values))

    def _stored_values(self) -> np.ndarray:
        return self._float_values(self.data)

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return self._handle.nnz

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
        """Stored values, read-only (bfloat16: uint16 bit patterns)."""
        return self._handle.data

    def __repr__(self) -> str:
        rows, cols = self.shape
        return (f"<CSRMatrix {rows}x{cols}, {self.nnz} stored ({self.density:.1%} dense), "
                f"dtype={self._dtype}{_pattern_note(self)}>")


def _with_value_dtype(cls: Any, arrays: tuple[Any, ...], shape: tuple[int, int],
                      value_dtype: Any) -> Any:
    """``cls(arrays, shape, dtype=value_dtype)``: what pickling rebuilds every format from
    (bfloat16 data are uint16 bit patterns, which alone would read as integers)."""
    return cls(arrays, shape, dtype=value_dtype)


def _pattern_note(matrix: SparseFormat) -> str:
    return "" if matrix.has_values else ", pattern only"


def _check_scipy(matrix: Any) -> None:
    if not sp.issparse(matrix):
        raise TypeError(f"from_scipy needs a scipy.sparse matrix, got {type(matrix).__name__}")
    if matrix.ndim != 2:
        raise ValueError(f"only 2-d sparse matrices are supported, got {matrix.ndim}-d")


def _build_handle(data: Any, indices: Any, indptr: Any, shape: Any, dtype: Any) -> Any:
    rows, cols = _check_shape(shape)
    values = np.asarray(data)
    if values.ndim != 1:
        raise ValueError(f"data must be 1-dimensional, got shape {values.shape}")
    target = stored_value_dtype(values.dtype if dtype is None else dtype)
    indices, indptr = _checked_index_arrays(indices, indptr, cols)
    return _CORE_CSR[target].from_arrays(
        rows, cols, indptr, indices, stored_value_array(values, target)
    )


MAX_BLOCK_EDGE: int = _core.kernel_catalogue()["limits"]["max_block_edge"]


def _check_blocksize(blocksize: Any) -> tuple[int, int]:
    try:
        r, c = blocksize
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (r, c))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"blocksize must be a pair of integers (R, C), got {blocksize!r}")
    r, c = int(r), int(c)
    if not (1 <= r <= MAX_BLOCK_EDGE and 1 <= c <= MAX_BLOCK_EDGE):
        raise ValueError(
            f"blocksize must be in [1, {MAX_BLOCK_EDGE}] along each edge, got {(r, c)}"
        )
    return r, c


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class BSRMatrix(SparseFormat):
    """A block compressed sparse row matrix of float32, float64 or bfloat16 values.

    The matrix is cut into ``R x C`` blocks (``blocksize``); a stored block
    keeps all of its ``R * C`` values, zeros included. The block shapes in
    ``sparsegemm.kernel_catalogue()["bsr_block_shapes"]`` (1x1, 2x1, 4x1, 8x1,
    16x1 and 4x4 in this release) have register-tiled kernels; other shapes run
    a generic kernel. The shape need not divide by the block: edge blocks are
    zero-padded in storage (``data`` shows the padding) and the padding never
    reaches an operand or a result.

    Build one with :meth:`from_dense`, :meth:`from_scipy` or
    ``BSRMatrix((data, indices, indptr), shape=(M, K))`` as in scipy, where
    ``data`` has shape (nblocks, R, C), ``indices`` are block columns (sorted
    and unique in each block row) and ``indptr`` has one entry per block row
    plus one. Padding entries of ``data`` must be zero.

    ``dtype="bfloat16"`` stores the values as bfloat16, as :class:`BitmapMatrix`
    describes (uint16 bit patterns in :attr:`data`, float32 products).
    """

    __slots__ = ()
    _CORE = _CORE_BSR

    def __init__(
        self,
        arg: Any,
        shape: tuple[int, int] | None = None,
        *,
        blocksize: tuple[int, int] | None = None,
        dtype: Any = None,
    ):
        if isinstance(arg, BSRMatrix):
            if blocksize is not None and _check_blocksize(blocksize) != arg.blocksize:
                raise ValueError(f"cannot change the blocksize of a BSRMatrix ({arg.blocksize}) "
                                 f"to {blocksize}; use BSRMatrix.from_dense(A.to_dense(), ...)")
            source = arg.astype(dtype) if dtype is not None else arg
            self._set_handle(source._handle)
        elif sp.issparse(arg):
            self._set_handle(BSRMatrix.from_scipy(arg, blocksize, dtype=dtype)._handle)
        elif isinstance(arg, tuple) and len(arg) == 3:
            if shape is None:
                raise ValueError("shape is required with (data, indices, indptr)")
            data, indices, indptr = arg
            self._set_handle(_build_bsr_handle(data, indices, indptr, shape, blocksize, dtype))
        else:
            raise TypeError(
                "BSRMatrix() takes a scipy.sparse matrix, a BSRMatrix or (data, indices, indptr) "
                "with shape; use BSRMatrix.from_dense for a dense array"
            )

    @classmethod
    def from_dense(
        cls,
        dense: Any,
        blocksize: tuple[int, int] = (4, 1),
        threshold: float = 0.0,
        *,
        dtype: Any = None,
    ) -> BSRMatrix:
        """Store every ``blocksize`` block holding an entry with ``|a| > threshold``.

        The default threshold 0 keeps every block with a nonzero; NaN counts as
        nonzero. Entries below the threshold inside a kept block are stored as
        they are. Any memory order is accepted without a copy for
        float32/float64 input. With ``dtype="bfloat16"`` each entry is rounded to
        bfloat16 first and the threshold applies to the rounded value.
        """
        array, target = _dense_operand(dense, dtype)
        r, c = _check_blocksize(blocksize)
        threshold = _check_threshold(threshold)
        return cls._from_handle(_CORE_BSR[target].from_dense(array, (r, c), threshold))

    @classmethod
    def from_scipy(
        cls, matrix: Any, blocksize: tuple[int, int] | None = None, *, dtype: Any = None
    ) -> BSRMatrix:
        """Convert a scipy.sparse matrix or array to BSR.

        A scipy BSR input keeps its blocksize unless ``blocksize`` asks for
        another; other formats use ``blocksize`` (default (4, 1)). Shapes that
        do not divide by the block are padded. The input is never modified;
        duplicates are summed. Explicitly stored zeros are kept.
        """
        _check_scipy(matrix)
        if blocksize is None:
            blocksize = (
                matrix.blocksize if sp.issparse(matrix) and matrix.format == "bsr" else (4, 1)
            )
        r, c = _check_blocksize(blocksize)
        rows, cols = matrix.shape
        if matrix.format == "bsr" and matrix.blocksize == (r, c):
            bsr = matrix
            if not bsr.has_canonical_format:
                bsr = bsr.copy()
                bsr.sum_duplicates()
        else:
            # scipy blocks only shapes that divide by the block: pad with empty rows/columns.
            coo = matrix.tocoo()
            padded = (_ceil_div(rows, r) * r, _ceil_div(cols, c) * c)
            bsr = sp.coo_array((coo.data, (coo.row, coo.col)), shape=padded).tobsr((r, c))
            bsr.sum_duplicates()
        return cls._from_handle(
            _build_bsr_handle(bsr.data, bsr.indices, bsr.indptr, (rows, cols), (r, c), dtype)
        )

    @classmethod
    def pattern(cls, indptr: Any, indices: Any, shape: tuple[int, int],
                blocksize: tuple[int, int], dtype: Any = np.float32) -> BSRMatrix:
        """A pattern-only matrix: validated block-row ``indptr`` and block-column
        ``indices`` (as for ``(data, indices, indptr)``) and no values, for
        products given ``values=`` (nnz_blocks * R * C of them)."""
        rows, cols = _check_shape(shape)
        r, c = _check_blocksize(blocksize)
        indices, indptr = _checked_index_arrays(
            indices, indptr, _ceil_div(cols, c), "block-column index"
        )
        return cls._from_handle(
            _CORE_BSR[stored_value_dtype(dtype)].pattern_from_arrays(rows, cols, (r, c), indptr,
                                                                     indices)
        )

    def to_scipy(self, *, pad: bool = False) -> sp.bsr_array:
        """A scipy ``bsr_array`` holding copies of this matrix's arrays.

        scipy requires the shape to divide by the blocksize. When it does not,
        this raises ValueError unless ``pad=True``, which returns the matrix
        padded with zero rows/columns to the next multiple of the block.
        """
        rows, cols = self.shape
        r, c = self.blocksize
        padded = (_ceil_div(rows, r) * r, _ceil_div(cols, c) * c)
        if padded != (rows, cols) and not pad:
            raise ValueError(
                f"scipy's bsr_array needs a shape that divides by the blocksize; {self.shape} does "
                f"not divide by {self.blocksize}. Use to_scipy(pad=True) for the {padded} padded "
                f"matrix, or to_dense()"
            )
        indptr = self.indptr
        index_dtype = np.int32 if indptr[-1] < 2**31 else np.int64
        return sp.bsr_array(
            (self._stored_values().reshape(self.data.shape).copy(),
             self.indices.astype(index_dtype), indptr.astype(index_dtype)),
            shape=padded,
            blocksize=(r, c),
        )

    def _with_values(self, dtype: Any) -> BSRMatrix:
        return BSRMatrix._from_handle(
            _CORE_BSR[dtype].from_arrays(*self.shape, self.blocksize, self.indptr, self.indices,
                                         stored_value_array(self._stored_values(), dtype))
        )

    def _stored_values(self) -> np.ndarray:
        return self._float_values(self._handle.data)

    def _reduce_values(self) -> tuple[Any, tuple[Any, ...]]:
        return (_with_value_dtype,
                (BSRMatrix, (self.data, self.indices, self.indptr), self.shape, self._dtype))

    def _reduce_pattern(self) -> tuple[Any, tuple[Any, ...]]:
        return (BSRMatrix.pattern,
                (self.indptr, self.indices, self.shape, self.blocksize, self._dtype))

    @property
    def blocksize(self) -> tuple[int, int]:
        """(R, C): rows and columns of a block."""
        r, c = self._handle.blocksize
        return (r, c)

    @property
    def nnz_blocks(self) -> int:
        """Number of stored blocks."""
        return self._handle.nblocks

    @property
    def nnz(self) -> int:
        """Number of stored values: nnz_blocks * R * C (zeros inside blocks and padding included).

        So ``density`` counts what the kernels multiply, and may exceed 1 for a
        small matrix whose edge blocks are mostly padding.
        """
        r, c = self.blocksize
        return self.nnz_blocks * r * c

    @property
    def indptr(self) -> np.ndarray:
        """Block-row pointers, int64, read-only."""
        return self._handle.indptr

    @property
    def indices(self) -> np.ndarray:
        """Block-column indices, int32, read-only."""
        return self._handle.indices

    @property
    def data(self) -> np.ndarray:
        """Stored blocks, shape (nnz_blocks, R, C), read-only (bfloat16: uint16 bit patterns)."""
        return self._handle.data.reshape(self.nnz_blocks, *self.blocksize)

    def transpose_with_permutation(self) -> tuple[BSRMatrix, np.ndarray]:
        """The (K x M) transpose, with C x R blocks, and the int64 block permutation ``p``:
        ``T.data[k] == self.data[p[k]].T``.

        With ``p``, values that change while the pattern stays fixed (fine-tuning)
        are transposed without rebuilding the pattern.
        """
        handle, permutation = self._handle.transposed()
        return BSRMatrix._from_handle(handle), permutation

    def __repr__(self) -> str:
        rows, cols = self.shape
        r, c = self.blocksize
        return (f"<BSRMatrix {rows}x{cols}, blocksize {r}x{c}, {self.nnz_blocks} blocks "
                f"({self.density:.1%} stored), dtype={self._dtype}{_pattern_note(self)}>")


def _build_bsr_handle(
    data: Any, indices: Any, indptr: Any, shape: Any, blocksize: Any, dtype: Any
) -> Any:
    rows, cols = _check_shape(shape)
    values = np.asarray(data)
    if values.ndim == 3:
        if blocksize is not None and _check_blocksize(blocksize) != values.shape[1:]:
            raise ValueError(f"data holds {values.shape[1:]} blocks but blocksize is {blocksize}")
        blocksize = values.shape[1:]
    elif values.ndim != 1 or blocksize is None:
        raise ValueError(
            "data must have shape (nblocks, R, C), or be 1-dimensional with blocksize given; "
            f"got shape {values.shape}"
        )
    r, c = _check_blocksize(blocksize)
    target = stored_value_dtype(values.dtype if dtype is None else dtype)
    indices, indptr = _checked_index_arrays(
        indices, indptr, _ceil_div(cols, c), "block-column index"
    )
    return _CORE_BSR[target].from_arrays(
        rows, cols, (r, c), indptr, indices, stored_value_array(values.reshape(-1), target)
    )


BITMAP_WORD_BITS = 64  # kBitmapWordBits in csrc/core/bitmap_matrix.h


class BitmapArrays:
    """The arrays of a bitmap-stored matrix (:class:`BitmapMatrix` and
    :class:`sparsegemm.Int8BitmapMatrix`), read from its C++ handle."""

    __slots__ = ()
    _handle: Any
    shape: Any

    @property
    def nnz(self) -> int:
        """Number of stored entries (set bits)."""
        return self._handle.nnz

    @property
    def words_per_row(self) -> int:
        """uint64 words per row: ceil(cols / 64)."""
        return self._handle.words_per_row

    @property
    def bits(self) -> np.ndarray:
        """The bitmap, uint64 of shape (rows, words_per_row), read-only."""
        return self._handle.bits.reshape(self.shape[0], self.words_per_row)

    @property
    def offsets(self) -> np.ndarray:
        """Position of each row's first stored value, int64 (rows + 1), read-only."""
        return self._handle.offsets

    @property
    def data(self) -> np.ndarray:
        """Stored values, row-major, read-only (bfloat16: uint16 bit patterns)."""
        return self._handle.data


class BitmapMatrix(BitmapArrays, SparseFormat):
    """A bitmap matrix: one bit per entry plus the stored values, packed.

    Row ``r`` owns ``ceil(cols / 64)`` uint64 words (:attr:`bits`, shape
    (rows, words_per_row)); bit ``c % 64`` of word ``c // 64`` is set when
    column ``c`` is stored, and bits past the last column are zero. The stored
    values (:attr:`data`) follow row by row, columns increasing; ``offsets[r]``
    is the position of row ``r``'s first value. At ``(1 - s) * itemsize + 1/8``
    bytes per weight (2.1 bytes at 50% sparsity in float32, against CSR's 6 per
    stored entry and dense's 4) it is the format for batch 1-16 products at
    30-80% unstructured sparsity, where the work streams the weight from memory.

    Build one with :meth:`from_dense`, :meth:`from_scipy` or
    ``BitmapMatrix((data, bits), shape=(M, K))``. As with CSR, entries that are
    not stored never multiply the dense operand (no ``0 * inf`` from them), and
    explicitly stored zeros (from scipy) are kept.

    ``dtype="bfloat16"`` stores the values as bfloat16 (2 bytes each, 1.125
    bytes per weight at 50% sparsity), rounded to nearest even from float32
    exactly as torch rounds (float64 input is rounded to float32 first; every
    NaN becomes bfloat16's quiet NaN). numpy has no bfloat16, so such a matrix
    gives :attr:`data` as uint16 bit patterns (the upper half of the float32 of
    the same value) and takes them in ``(data, bits)`` with ``dtype="bfloat16"``
    (float data is rounded). Its :attr:`dtype` is float32, the dtype its
    products compute in and return (float32 operands are used as they are; a
    float64 operand converts the matrix to float64, as numpy promotes), and
    :meth:`to_dense` gives float32. :attr:`value_dtype` says 'bfloat16'.
    """

    __slots__ = ()
    _CORE = _CORE_BITMAP

    def __init__(self, arg: Any, shape: tuple[int, int] | None = None, *, dtype: Any = None):
        if isinstance(arg, BitmapMatrix):
            source = arg.astype(dtype) if dtype is not None else arg
            self._set_handle(source._handle)
        elif sp.issparse(arg):
            self._set_handle(BitmapMatrix.from_scipy(arg, dtype=dtype)._handle)
        elif isinstance(arg, tuple) and len(arg) == 2:
            if shape is None:
                raise ValueError("shape is required with (data, bits)")
            data, bits = arg
            self._set_handle(_build_bitmap_handle(data, bits, shape, dtype))
        else:
            raise TypeError(
                "BitmapMatrix() takes a scipy.sparse matrix, a BitmapMatrix or (data, bits) with "
                "shape; use BitmapMatrix.from_dense for a dense array"
            )

    @classmethod
    def from_dense(cls, dense: Any, threshold: float = 0.0, *, dtype: Any = None) -> BitmapMatrix:
        """Store the entries of a 2-d array with ``|a| > threshold`` (NaN is kept).

        Any memory order is accepted without a copy for float32/float64 input.
        With ``dtype="bfloat16"`` each entry is rounded to bfloat16 first and the
        threshold applies to the rounded value (what rounds to zero is not stored).
        """
        array, target = _dense_operand(dense, dtype)
        threshold = _check_threshold(threshold)
        return cls._from_handle(_CORE_BITMAP[target].from_dense(array, threshold))

    @classmethod
    def from_scipy(cls, matrix: Any, *, dtype: Any = None) -> BitmapMatrix:
        """Convert any scipy.sparse matrix or array to a bitmap.

        The input is never modified: duplicates are summed on a copy when
        needed. Explicitly stored zeros are kept (their bit is set).
        """
        _check_scipy(matrix)
        csr = matrix.tocsr()
        if not csr.has_canonical_format:
            csr = csr.copy() if csr is matrix else csr
            csr.sum_duplicates()
        rows, cols = _check_shape(csr.shape)
        values = np.asarray(csr.data)
        target = stored_value_dtype(values.dtype if dtype is None else dtype)
        indices, indptr = _checked_index_arrays(csr.indices, csr.indptr, cols)
        return cls._from_handle(_CORE_BITMAP[target].from_csr_arrays(
            rows, cols, indptr, indices, stored_value_array(values, target)))

    @classmethod
    def pattern(cls, bits: Any, shape: tuple[int, int], dtype: Any = np.float32) -> BitmapMatrix:
        """A pattern-only matrix: validated ``bits`` (as for ``(data, bits)``) and no
        values, for products given ``values=`` (for ``dtype="bfloat16"``, uint16 bit patterns)."""
        rows, cols = _check_shape(shape)
        return cls._from_handle(_CORE_BITMAP[stored_value_dtype(dtype)].pattern_from_arrays(
            rows, cols, bitmap_words(bits, rows, cols)))

    def to_scipy(self) -> sp.csr_array:
        """A scipy ``csr_array`` with the same stored entries (copies)."""
        indices = self.column_indices()
        offsets = self.offsets
        index_dtype = np.int32 if offsets[-1] < 2**31 else np.int64
        return sp.csr_array(
            (np.array(self._stored_values()), indices.astype(index_dtype),
             offsets.astype(index_dtype)),
            shape=self.shape,
        )

    def column_indices(self) -> np.ndarray:
        """The column of every stored value, in storage order (int64)."""
        rows, cols = self.shape
        if rows == 0 or cols == 0:
            return np.zeros(0, dtype=np.int64)
        mask = np.unpackbits(self.bits.view(np.uint8), axis=1, bitorder="little")[:, :cols]
        return np.nonzero(mask)[1].astype(np.int64)

    def with_data(self, data: Any) -> BitmapMatrix:
        """A matrix with this bitmap and new values (one per stored entry; for
        bfloat16, uint16 bit patterns or floats to round)."""
        values = stored_value_array(np.asarray(data), self._dtype)
        if values.shape != (self.nnz,):
            raise ValueError(f"data must have shape ({self.nnz},), got {values.shape}")
        return BitmapMatrix._from_handle(self._handle.with_values(values))

    def _with_values(self, dtype: Any) -> BitmapMatrix:
        rows, cols = self.shape
        return BitmapMatrix._from_handle(
            _CORE_BITMAP[dtype].from_arrays(rows, cols, self._handle.bits,
                                            stored_value_array(self._stored_values(), dtype)))

    def _stored_values(self) -> np.ndarray:
        return self._float_values(self.data)

    @property
    def column_plan_bytes(self) -> int:
        """Bytes of the column plan, 0 until built. On AVX-512 CPUs the first product of
        1-3 rows over float32 or bfloat16 weights (bfloat16: with VBMI2) with at most 17%
        stored builds it (one byte per stored weight and four per window of up
        to 16, about 0.125 per weight at 90% sparsity, kept with the matrix and its copies)
        and walks the rows by their stored columns."""
        return int(self._handle.column_plan_bytes)

    def _reduce_values(self) -> tuple[Any, tuple[Any, ...]]:
        return (_with_value_dtype, (BitmapMatrix, (self.data, self.bits), self.shape, self._dtype))

    def _reduce_pattern(self) -> tuple[Any, tuple[Any, ...]]:
        return (BitmapMatrix.pattern, (self.bits, self.shape, self._dtype))

    def transpose_with_permutation(self) -> tuple[BitmapMatrix, np.ndarray]:
        """The (K x M) transpose and the int64 permutation ``p`` with ``T.data == self.data[p]``."""
        as_csr = CSRMatrix((self._stored_values(), self.column_indices().astype(np.int32),
                            self.offsets), shape=self.shape)
        transposed, permutation = as_csr.transpose_with_permutation()
        # Widened bfloat16 values round back to themselves.
        return BitmapMatrix.from_scipy(transposed.to_scipy(), dtype=self._dtype), permutation

    def __repr__(self) -> str:
        rows, cols = self.shape
        return (f"<BitmapMatrix {rows}x{cols}, {self.nnz} stored ({self.density:.1%} dense), "
                f"dtype={self._dtype}{_pattern_note(self)}>")


def _bfloat16_bitmap(data: np.ndarray, bits: np.ndarray, shape: tuple[int, int]) -> BitmapMatrix:
    """A bfloat16 BitmapMatrix from its bit patterns: what pickles made before
    ``_with_value_dtype`` rebuild from (kept so that they still load)."""
    return BitmapMatrix((data, bits), shape, dtype=BFLOAT16)


def _build_bitmap_handle(data: Any, bits: Any, shape: Any, dtype: Any) -> Any:
    rows, cols = _check_shape(shape)
    values = np.asarray(data)
    if values.ndim != 1:
        raise ValueError(f"data must be 1-dimensional, got shape {values.shape}")
    target = stored_value_dtype(values.dtype if dtype is None else dtype)
    return _CORE_BITMAP[target].from_arrays(rows, cols, bitmap_words(bits, rows, cols),
                                            stored_value_array(values, target))


def bitmap_words(bits: Any, rows: int, cols: int) -> np.ndarray:
    """``bits`` ((rows, ceil(cols / 64)) or flat, any integer dtype) as the contiguous
    uint64 words the core takes; the core checks the bits past ``cols``."""
    words = np.asarray(bits)
    if words.dtype.kind not in "iu" and words.size:
        raise TypeError(f"bits must have an integer dtype (uint64 words), got {words.dtype}")
    words_per_row = -(-cols // BITMAP_WORD_BITS)
    if words.shape not in ((rows, words_per_row), (rows * words_per_row,)):
        raise ValueError(f"bits must have shape ({rows}, {words_per_row}) (rows, ceil(cols / 64)), "
                         f"got {words.shape}")
    if words.dtype.itemsize != 8:
        if words.size and words.min() < 0:
            raise ValueError("bits must be non-negative words")
        words = words.astype(np.uint64)
    return np.require(words.reshape(-1).view(np.uint64), requirements=["C", "A"])
