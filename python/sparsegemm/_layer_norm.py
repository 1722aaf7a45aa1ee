"""Residual add + LayerNorm, ``LayerNorm(x + residual) * weight + bias``, on CPU kernels.

Not a sparse product either, but a post-norm transformer block ends in one after
each of its two output projections: torch makes two passes over memory for it (the
add, then the norm), the kernel (``csrc/kernels/layer_norm``) one, with the row in
L1 for the statistics. :func:`sparsegemm.torch.add_layer_norm` is the torch entry
point, and ``sparsify`` routes a model's ``norm(y + residual)`` through it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._runtime import resolve_num_threads

__all__ = ["layer_norm"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _rows(array: np.ndarray, cols: int) -> np.ndarray:
    """``array`` as (rows, cols) with contiguous rows, a view where it can be."""
    rows = array.reshape(-1, cols) if cols else array.reshape(-1, 0)
    if cols > 1 and rows.strides[1] != rows.itemsize:
        rows = np.ascontiguousarray(rows)
    return rows


def _vector(value: Any, name: str, cols: int, dtype: np.dtype) -> np.ndarray | None:
    if value is None:
        return None
    vector = np.asarray(value)
    if vector.dtype != dtype:
        raise TypeError(f"{name} must have x's dtype {dtype}, got {vector.dtype}")
    if vector.shape != (cols,):
        raise ValueError(f"{name} must have shape ({cols},), the last dimension of x; "
                         f"got {vector.shape}")
    return np.ascontiguousarray(vector)


def layer_norm(x: Any, residual: Any = None, weight: Any = None, bias: Any = None, *,
               eps: float = 1e-5, out: np.ndarray | None = None,
               num_threads: int | None = None) -> np.ndarray:
    """``LayerNorm(x + residual)`` over the last dimension, as ``torch.nn.LayerNorm``
    computes it (biased variance, ``eps`` inside the square root), times ``weight``
    plus ``bias``.

    Parameters
    ----------
    x
        float32 or float64, any shape with at least one dimension; any strides.
    residual
        None or an array of x's shape and dtype, added to x first.
    weight, bias
        None (1 and 0) or 1-d arrays of x's dtype with x's last dimension.
    eps
        Added to the variance; finite and non-negative.
    out
        Optional array of x's shape and dtype to write into, C-contiguous. It may be
        ``x`` or ``residual`` itself (in place) but must not otherwise overlap them.
    num_threads
        Threads to use; default :func:`sparsegemm.get_num_threads`.

    Returns
    -------
    The result (a new C-contiguous array), or ``out``.
    """
    x = np.asarray(x)
    if x.dtype not in _DTYPES:
        raise TypeError(f"layer_norm runs in float32 or float64; x has dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError("x must have at least one dimension (the one normalised)")
    cols = x.shape[-1]
    if residual is not None:
        residual = np.asarray(residual)
        if residual.dtype != x.dtype:
            raise TypeError(f"residual must have x's dtype {x.dtype}, got {residual.dtype}")
        if residual.shape != x.shape:
            raise ValueError(f"residual must have x's shape {x.shape}, got {residual.shape}")
    weight = _vector(weight, "weight", cols, x.dtype)
    bias = _vector(bias, "bias", cols, x.dtype)
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and non-negative, got {eps}")
    if out is None:
        out = np.empty(x.shape, dtype=x.dtype)
    elif (not isinstance(out, np.ndarray) or out.dtype != x.dtype or out.shape != x.shape
          or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"out must be a writeable C-contiguous {x.dtype} numpy array of "
                         f"shape {x.shape}")
    for operand, name in ((x, "x"), (residual, "residual")):
        if (operand is not None and operand is not out
                and np.may_share_memory(out, operand)):
            raise ValueError(f"out must be {name} itself or not overlap it")
    if out.size == 0:
        return out
    x_rows = _rows(x, cols)
    residual_rows = None if residual is None else _rows(residual, cols)
    _core.layer_norm(x_rows, residual_rows, weight, bias, out.reshape(-1, cols), eps,
                     resolve_num_threads(num_threads))
    return out
