"""Scaled dot-product attention, ``softmax(q k^T * scale + mask) v``, on CPU kernels.

Not a sparse product, but in a pruned transformer it is what remains: at 90%
sparsity the attention of an encoder layer takes a quarter of the model's time.
The kernel (``csrc/kernels/attention``) keeps each block of queries' scores in
L1 between the two products and takes ``exp`` from a polynomial; it is float32
and inference only. :func:`sparsegemm.torch.scaled_dot_product_attention` is
the torch entry point, with ``F.scaled_dot_product_attention``'s signature.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._runtime import resolve_num_threads

__all__ = ["attention"]


def _operand(array: Any, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.float32:
        raise TypeError(f"attention runs in float32; {name} has dtype {array.dtype}")
    if array.ndim not in (3, 4):
        raise ValueError(f"{name} must be (heads, rows, dims) or (batch, heads, rows, dims), "
                         f"got shape {array.shape}")
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.shape[-1] > 1 and array.strides[-1] != array.itemsize:
        array = np.ascontiguousarray(array)  # the kernel reads each row's dims contiguously
    return array


def additive_mask(mask: Any, shape: tuple[int, int, int, int]) -> np.ndarray | None:
    """``mask`` (None, boolean with True = attend, or additive float) as a float32 array
    broadcast to ``shape`` (batch, heads, query rows, key rows), rows contiguous."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        mask = np.where(mask, np.float32(0), np.float32(-np.inf))
    elif mask.dtype.kind != "f":
        raise TypeError(f"mask must be boolean (True = attend) or floating (added to the "
                        f"scores), got dtype {mask.dtype}")
    mask = mask.astype(np.float32, copy=False)
    try:
        mask = np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(f"mask of shape {mask.shape} does not broadcast to (batch, heads, "
                         f"query rows, key rows) = {shape}") from None
    if shape[-1] > 1 and mask.strides[-1] != mask.itemsize:
        mask = np.ascontiguousarray(mask)
    return mask


def attention(query: Any, key: Any, value: Any, mask: Any = None, *,
              scale: float | None = None, out: np.ndarray | None = None,
              num_threads: int | None = None) -> np.ndarray:
    """``softmax(query @ key^T * scale + mask) @ value`` per head.

    Parameters
    ----------
    query
        float32, (batch, heads, query rows, dims) or (heads, query rows, dims); any
        strides (a view of a (batch, rows, heads, dims) projection is read in place).
    key, value
        float32, (batch, heads, key rows, dims), or 3-d like ``query``.
    mask
        None, boolean (True = attend, as torch's ``attn_mask``) or float (added to
        the scores), broadcastable to (batch, heads, query rows, key rows). A query
        whose keys are all masked gets zeros, as in torch.
    scale
        Default ``1 / sqrt(dims)``.
    out
        Optional float32 array of the result's shape to write into (any strides
        with a contiguous last dimension, not overlapping the inputs).
    num_threads
        Threads to use; default :func:`sparsegemm.get_num_threads`.

    Returns
    -------
    The result, (batch, heads, query rows, dims) (3-d for 3-d inputs), or ``out``.
    """
    three_d = np.ndim(query) == 3
    q = _operand(query, "query")
    k = _operand(key, "key")
    v = _operand(value, "value")
    if k.shape != v.shape:
        raise ValueError(f"key and value must have the same shape, got {k.shape} and {v.shape}")
    batch, heads, q_len, dims = q.shape
    if k.shape[:2] != (batch, heads) or k.shape[3] != dims:
        raise ValueError(f"key of shape {k.shape} does not match query of shape {q.shape}: "
                         f"expected ({batch}, {heads}, key rows, {dims})")
    if scale is None:
        scale = 1.0 / math.sqrt(dims) if dims else 1.0
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    shape = (batch, heads, q_len, k.shape[2])
    mask_array = additive_mask(mask, shape)
    result_shape = q.shape[1:] if three_d else q.shape
    if out is None:
        out = np.empty(result_shape, dtype=np.float32)
    elif not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != result_shape:
        raise ValueError(f"out must be a float32 numpy array of shape {result_shape}")
    out4 = out[np.newaxis] if three_d else out
    if any(np.may_share_memory(out4, operand) for operand in (q, k, v)):
        raise ValueError("out must not overlap query, key or value")
    _core.attention(q, k, v, out4, mask_array, float(scale), resolve_num_threads(num_threads))
    return out
