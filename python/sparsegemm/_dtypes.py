"""Which dtypes the kernels compute in, and the documented casts to them."""

from __future__ import annotations

import numpy as np

KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def kernel_dtype(*dtypes: np.dtype) -> np.dtype:
    """The dtype a product of these operands is computed and returned in.

    numpy's promotion rules decide (``float32`` with ``int8`` stays float32, with
    ``int32`` becomes float64), then: float16 computes in float32; a bool or
    integer result (no float operand) computes in float64. Complex, object and
    other dtypes raise TypeError.
    """
    for dtype in dtypes:
        dtype = np.dtype(dtype)
        if dtype.kind not in "biuf":
            raise TypeError(
                f"unsupported dtype {dtype}; sparsegemm computes in float32 or float64"
            )
    result = np.result_type(*dtypes)
    if result == np.float16:
        return np.dtype(np.float32)
    if result.kind in "biu":
        return np.dtype(np.float64)
    if result not in KERNEL_DTYPES:
        raise TypeError(f"unsupported dtype {result}; sparsegemm computes in float32 or float64")
    return result


def as_kernel_array(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` in ``dtype`` with a layout the kernels accept, copying only if needed.

    Any non-negative strides that are whole items are read in place; negative
    strides, misaligned data or byte-swapped/other dtypes are copied (C order).
    """
    if array.dtype != dtype:
        return array.astype(dtype)  # astype keeps the memory order and aligns
    flags = array.flags
    if flags.c_contiguous and flags.aligned:  # the common case, checked cheaply
        return array
    if not array.flags.aligned or any(s < 0 or s % array.itemsize for s in array.strides):
        return np.array(array, order="C", copy=True)
    return array


# bfloat16 stored values (CSR, BSR and bitmap matrices). numpy has no bfloat16 dtype,
# so it is spelt as a string and its values travel as uint16 bit patterns: the
# upper half of the float32 with the same value.
BFLOAT16 = "bfloat16"


def is_bfloat16(dtype: object) -> bool:
    """True for ``'bfloat16'`` (or a dtype named so, such as ml_dtypes.bfloat16)."""
    if isinstance(dtype, str):
        return dtype == BFLOAT16
    return getattr(dtype, "name", getattr(dtype, "__name__", None)) == BFLOAT16


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float values rounded to bfloat16 (to nearest even, as torch rounds), as uint16 bits.

    Every NaN becomes the quiet NaN 0x7FC0, as in torch's scalar conversion.
    """
    wide = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((wide + (np.uint32(0x7FFF) + ((wide >> 16) & 1))) >> 16).astype(np.uint16)
    rounded[np.isnan(values)] = 0x7FC0
    return rounded


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) as float32 values (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def bfloat16_rounded(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to bfloat16 (as :func:`bfloat16_bits`), as float32 of their shape."""
    values = np.asarray(values)
    return bfloat16_to_float32(bfloat16_bits(values)).reshape(values.shape)


def stored_value_dtype(dtype: object) -> object:
    """The value dtype a matrix stores when asked for ``dtype``: ``'bfloat16'`` or the
    :func:`kernel_dtype` of ``dtype``."""
    return BFLOAT16 if is_bfloat16(dtype) else kernel_dtype(dtype)  # type: ignore[arg-type]


def compute_dtype(value_dtype: object) -> np.dtype:
    """The dtype products over stored ``value_dtype`` compute in: float32 for bfloat16."""
    return np.dtype(np.float32) if is_bfloat16(value_dtype) else np.dtype(value_dtype)  # type: ignore[call-overload]


def stored_value_array(values: np.ndarray, target: object) -> np.ndarray:
    """``values`` as the contiguous array the core takes for ``target`` values: for
    bfloat16, uint16 data are bit patterns and anything else is rounded."""
    if not is_bfloat16(target):
        return np.require(values, target, ["C", "A"])  # type: ignore[call-overload]
    if values.dtype == np.uint16:
        return np.require(values, requirements=["C", "A"])
    if values.dtype.kind not in "biuf":
        raise TypeError(f"bfloat16 data must be uint16 bit patterns or real numbers, "
                        f"got {values.dtype}")
    return bfloat16_bits(values)
