"""Sparse x dense products on numpy arrays.

The Python layer checks shapes and dtypes, converts operands once (copying only
when it must), allocates the output and makes a single call into the C++ core,
which releases the GIL while it computes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import _core
from ._dtypes import as_kernel_array, kernel_dtype
from ._runtime import resolve_num_threads
from .formats import CSRMatrix

SparseOperand = Any  # CSRMatrix or any scipy.sparse matrix/array


def as_sparse_operand(matrix: SparseOperand, dtype: Any = None) -> CSRMatrix:
    """``matrix`` as a sparsegemm format, converted to ``dtype`` if given.

    scipy.sparse input is converted (and validated) on every call, because scipy
    matrices are mutable and an edit could not be detected cheaply: convert once
    with :meth:`CSRMatrix.from_scipy` to reuse a matrix across calls.
    """
    if isinstance(matrix, CSRMatrix):
        return matrix if dtype is None else matrix.astype(dtype)
    if sp.issparse(matrix):
        return CSRMatrix.from_scipy(matrix, dtype=dtype)
    if isinstance(matrix, np.ndarray):
        raise TypeError(
            "A is a dense numpy array; wrap it with sparsegemm.CSRMatrix.from_dense(A) "
            "(or use numpy's @ for dense x dense)"
        )
    raise TypeError(
        f"A must be a sparsegemm.CSRMatrix or a scipy.sparse matrix, got {type(matrix).__name__}"
    )


def _check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype, *inputs: np.ndarray) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    for array in inputs:
        if np.may_share_memory(out, array):
            raise ValueError("out must not overlap the inputs")
    return out


def sparse_mm(
    A: SparseOperand,
    B: Any,
    *,
    out: np.ndarray | None = None,
    num_threads: int | None = None,
) -> np.ndarray:
    """``A @ B`` for a sparse ``A`` (M x K) and a dense ``B`` (K x N or K,).

    Parameters
    ----------
    A
        A :class:`CSRMatrix` or any scipy.sparse matrix/array.
    B
        Array-like of shape (K, N) or (K,), in any memory order (C, Fortran or
        strided views are read in place when the dtype already matches).
    out
        Optional output of shape (M, N) (or (M,)) and the result dtype, with
        contiguous rows; it must not overlap ``B``.
    num_threads
        Threads to use; default :func:`sparsegemm.get_num_threads`.

    Returns
    -------
    numpy.ndarray
        (M, N) or (M,), float32 if both operands are float32 (or float16),
        else float64 following numpy's promotion. NaN/Inf in stored entries of
        ``A`` or anywhere in ``B`` propagate as in scipy.sparse.
    """
    threads = resolve_num_threads(num_threads)
    B = np.asarray(B)
    if B.ndim not in (1, 2):
        raise ValueError(f"B must be 1- or 2-dimensional, got shape {B.shape}")
    a_dtype = A.dtype if isinstance(A, CSRMatrix) or sp.issparse(A) else None
    if a_dtype is None:
        as_sparse_operand(A)  # raises the right TypeError
    dtype = kernel_dtype(a_dtype, B.dtype)
    A = as_sparse_operand(A, dtype)
    rows, cols = A.shape
    if B.shape[0] != cols:
        raise ValueError(f"shape mismatch: A is {A.shape} but B is {B.shape}; "
                         f"A.shape[1] must equal B.shape[0]")
    vector = B.ndim == 1
    B2 = as_kernel_array(B, dtype)
    B2 = B2.reshape(cols, 1) if vector else B2
    result_shape = (rows,) if vector else (rows, B2.shape[1])
    if out is None:
        result = np.empty(result_shape, dtype=dtype)
    else:
        result = _check_out(out, result_shape, dtype, B)
        if result.ndim == 2 and result.size and result.shape[1] > 1 \
                and result.strides[1] != result.itemsize:
            raise ValueError("out must have contiguous rows (C order)")
    out2 = result.reshape(rows, 1) if vector else result
    _core.csr_matmul(A._handle, B2, out2, None, threads)
    return result


def linear(
    x: Any,
    weight: SparseOperand,
    bias: Any = None,
    *,
    num_threads: int | None = None,
) -> np.ndarray:
    """``x @ weight.T + bias`` with ``torch.nn.functional.linear`` semantics.

    Parameters
    ----------
    x
        Array-like of shape (..., in_features); any leading batch dimensions.
    weight
        Sparse (out_features x in_features): a :class:`CSRMatrix` or scipy.sparse.
    bias
        Optional array-like of shape (out_features,).

    Returns
    -------
    numpy.ndarray
        Shape (..., out_features), in the promoted dtype of ``x`` and ``weight``.
    """
    threads = resolve_num_threads(num_threads)
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (..., in_features)")
    if not (isinstance(weight, CSRMatrix) or sp.issparse(weight)):
        as_sparse_operand(weight)  # raises the right TypeError
    dtypes = [weight.dtype, x.dtype] + ([np.asarray(bias).dtype] if bias is not None else [])
    dtype = kernel_dtype(*dtypes)
    weight = as_sparse_operand(weight, dtype)
    out_features, in_features = weight.shape
    if x.shape[-1] != in_features:
        raise ValueError(f"shape mismatch: x is {x.shape} but weight is {weight.shape}; "
                         f"x.shape[-1] must equal weight.shape[1]")
    bias_array = None
    if bias is not None:
        bias_array = np.require(bias, dtype, ["C", "A"])
        if bias_array.shape != (out_features,):
            raise ValueError(f"bias must have shape ({out_features},), got {bias_array.shape}")
    batch_shape = x.shape[:-1]
    batch = math.prod(batch_shape)  # not reshape(-1, ...): that fails for in_features == 0
    x2 = as_kernel_array(x, dtype).reshape(batch, in_features)  # copies only if not viewable
    if x2.shape[0] and in_features > 1 and x2.strides[1] != x2.itemsize:
        x2 = np.ascontiguousarray(x2)
    result = np.empty((x2.shape[0], out_features), dtype=dtype)
    _core.csr_linear(weight._handle, x2, result, bias_array, threads)
    return result.reshape(*batch_shape, out_features)
