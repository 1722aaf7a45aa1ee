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
