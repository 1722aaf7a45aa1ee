"""Int8 weights with bitmap storage, for batch 1-16 ``nn.Linear`` products.

A pruned weight (50-90% unstructured sparsity) is stored as one bit per
weight plus the int8 values of the kept weights and one float32 scale per
row, so a product streams ``(1 - s) + 1/8`` bytes per weight instead of the
1 byte of dense int8 (FBGEMM's ``quantize_dynamic``) or 4 of float32.

Semantics (computed exactly by every ISA's kernel; see
``csrc/core/int8_bitmap_matrix.h``):

* weights: ``scales[r] = max_k |W[r, k]| / 127`` over the kept entries (0 for a
  row with nothing kept), ``q = clip(rint(W / scales[r]), -127, 127)`` (round
  half to even); a kept weight that rounds to 0 keeps its bit;
* activations, per row of ``x`` (a batch mixes tokens with very different
  ranges, so one scale per tensor would crush the small ones):
  ``sx[v] = max_k |x[v, k]| / 127``, ``xq = clip(rint(x * (1 / sx)), -127, 127)``
  (float32 operations; ``x / sx`` where ``1 / sx`` overflows, below about 2.9e-39);
* ``acc[v, r] = sum_k q[r, k] * xq[v, k]`` exactly in int32, so at most
  133,144 columns (``2**31 // 127**2``);
* ``y[v, r] = float32(acc[v, r]) * (scales[r] * sx[v]) + bias[r]``;
* a row of ``x`` holding Inf or NaN gives a row of NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._runtime import resolve_num_threads
from .formats import BitmapArrays, MatrixShape, _check_shape, _check_threshold, bitmap_words

MAX_INT8_COLS = 2**31 // 127**2  # kMaxInt8Cols in csrc/core/int8_bitmap_matrix.h


def _float32_operand(array: Any, name: str) -> np.ndarray:
    """``array`` as float32 (real inputs are converted; others raise TypeError)."""
    result = np.asarray(array)
    if result.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real array (computed in float32), got {result.dtype}")
    return result if result.dtype == np.float32 else result.astype(np.float32)


class Int8BitmapMatrix(BitmapArrays, MatrixShape):
    """A pruned weight quantized to int8 (one scale per row), stored as a bitmap.

    Build one with :meth:`from_dense` (quantizes) or
    ``Int8BitmapMatrix((data, bits, scales), shape=(M, K))`` (validates stored
    int8 ``data``, uint64 ``bits`` as for :class:`BitmapMatrix` and float32
    ``scales``). ``sparsegemm.linear(x, W, bias)`` and :meth:`linear` compute
    ``x @ W.T + bias`` with ``x`` quantized per row; :meth:`to_dense` gives the
    dequantized weight the product uses.
    """

    __slots__ = ("__weakref__", "_handle")

    def __init__(self, arg: Any, shape: tuple[int, int] | None = None):
        if isinstance(arg, Int8BitmapMatrix):
            self._handle = arg._handle
        elif isinstance(arg, tuple) and len(arg) == 3:
            if shape is None:
                raise ValueError("shape is required with (data, bits, scales)")
            self._handle = _build_handle(*arg, shape)
        else:
            raise TypeError("Int8BitmapMatrix() takes an Int8BitmapMatrix or (data, bits, scales) "
                            "with shape; use Int8BitmapMatrix.from_dense for a dense array")

    @classmethod
    def _from_handle(cls, handle: Any) -> Int8BitmapMatrix:
        matrix = cls.__new__(cls)
        matrix._handle = handle
        return matrix

    @classmethod
    def from_dense(cls, dense: Any, threshold: float = 0.0) -> Int8BitmapMatrix:
        """Keep the entries with ``|w| > threshold`` and quantize them per row.

        ``dense`` is converted to float32 (any memory order is read in place);
        it must be finite.
        """
        array = np.asarray(dense)
        if array.ndim != 2:
            raise ValueError(f"from_dense needs a 2-dimensional array, got shape {array.shape}")
        _check_shape(array.shape)
        array = _float32_operand(array, "dense")
        if not array.flags.aligned or any(s < 0 for s in array.strides):
            array = np.ascontiguousarray(array)
        return cls._from_handle(_core.Int8BitmapMatrix.from_dense(array,
                                                                  _check_threshold(threshold)))

    @property
    def scales(self) -> np.ndarray:
        """float32 scale of each row, read-only."""
        return self._handle.scales

    @property
    def storage_bytes(self) -> int:
        """Bytes of storage: bits, int8 values, row offsets and scales."""
        return int(self._handle.storage_bytes)

    @property
    def quad_plan_bytes(self) -> int:
        """Bytes of the quad plan, 0 until built. On CPUs with AVX512-VNNI (and no AMX) the
        first product of 12 or more rows over weights with at most 20% stored builds it
        (6 bytes per column quad holding a weight, about 0.5 per weight at 90% sparsity,
        kept with the matrix) and later ones read it."""
        return int(self._handle.quad_plan_bytes)

    @property
    def index_plan_bytes(self) -> int:
        """Bytes of the index plan, 0 until built. On CPUs with AVX512-VBMI and VNNI the
        first product of 1-4 rows over weights with at most 15% stored builds it (one byte
        per stored weight, about 0.1 per weight at 90% sparsity, kept with the matrix) and
        later ones read it instead of the bitmap."""
        return int(self._handle.index_plan_bytes)

    @property
    def nbytes(self) -> int:
        return self.storage_bytes

    @property
    def bytes_per_weight(self) -> float:
        """Storage bytes per entry of the (rows x cols) weight (1.0 for dense int8)."""
        rows, cols = self.shape
        return self.storage_bytes / (rows * cols) if rows * cols else 0.0

    def to_dense(self) -> np.ndarray:
        """The dequantized weight ``q * scales[:, None]`` (float32, C order)."""
        return self._handle.to_dense()

    def toarray(self) -> np.ndarray:
        return self.to_dense()

    def copy(self) -> Int8BitmapMatrix:
        rebuild, arguments = self._reduce()
        return rebuild(*arguments)

    def _reduce(self) -> tuple[Any, tuple[Any, ...]]:
        return (Int8BitmapMatrix, ((self.data, self.bits, self.scales), self.shape))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self._reduce()

    def linear(self, x: Any, bias: Any = None, *, num_threads: int | None = None) -> np.ndarray:
        """``x @ W.T + bias`` in float32, ``x`` (..., in_features) quantized per row."""
        threads = resolve_num_threads(num_threads)
        x = _float32_operand(x, "x")
        if x.ndim == 0:
            raise ValueError("x must have at least one dimension (..., in_features)")
        out_features, in_features = self.shape
        if x.shape[-1] != in_features:
            raise ValueError(f"shape mismatch: x is {x.shape} but weight is {self.shape}; "
                             f"x.shape[-1] must equal weight.shape[1]")
        bias_array = None
        if bias is not None:
            bias_array = np.require(_float32_operand(bias, "bias"), np.float32, ["C", "A"])
            if bias_array.shape != (out_features,):
                raise ValueError(f"bias must have shape ({out_features},), "
                                 f"got {bias_array.shape}")
        batch_shape = x.shape[:-1]
        x2 = x.reshape(math.prod(batch_shape), in_features)
        if not x2.flags.aligned or (x2.shape[0] and in_features > 1
                                    and x2.strides[1] != x2.itemsize) or x2.strides[0] < 0:
            x2 = np.ascontiguousarray(x2)
        result = np.empty((x2.shape[0], out_features), dtype=np.float32)
        _core.int8_bitmap_linear(self._handle, x2, result, bias_array, threads)
        return result.reshape(*batch_shape, out_features)

    def int_product(self, xq: Any, *, num_threads: int | None = None) -> np.ndarray:
        """The exact int32 product ``xq @ q.T`` for int8 ``xq`` (batch, in_features)
        with entries in [-127, 127]: the integer part of :meth:`linear`."""
        threads = resolve_num_threads(num_threads)
        xq = np.asarray(xq)
        if xq.dtype != np.int8:
            raise TypeError(f"xq must have dtype int8, got {xq.dtype}")
        if xq.ndim != 2:
            raise ValueError(f"xq must be 2-dimensional (batch, in_features), got {xq.shape}")
        result = np.empty((xq.shape[0], self.shape[0]), dtype=np.int32)
        _core.int8_bitmap_int_product(self._handle, xq, result, threads)
        return result

    def __repr__(self) -> str:
        rows, cols = self.shape
        return (f"<Int8BitmapMatrix {rows}x{cols}, {self.nnz} stored ({self.density:.1%} dense), "
                f"{self.bytes_per_weight:.3f} bytes per weight>")


def _build_handle(data: Any, bits: Any, scales: Any, shape: Any) -> Any:
    rows, cols = _check_shape(shape)
    values = np.asarray(data)
    if values.dtype != np.int8:
        raise TypeError(f"data must have dtype int8, got {values.dtype}")
    if values.ndim != 1:
        raise ValueError(f"data must be 1-dimensional, got shape {values.shape}")
    row_scales = np.asarray(scales)
    if row_scales.dtype.kind != "f":
        raise TypeError(f"scales must be floating point, got {row_scales.dtype}")
    return _core.Int8BitmapMatrix.from_arrays(
        rows, cols, bitmap_words(bits, rows, cols), np.require(values, np.int8, ["C", "A"]),
        np.require(row_scales, np.float32, ["C", "A"]))
