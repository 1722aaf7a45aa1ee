"""Hypothesis fuzzing of the bitmap format's constructor and products.

The contract of tests/test_fuzz.py (whose strategies this reuses): an input
either raises a clear ValueError/TypeError/MemoryError, and then only because
something about it was wrong, or gives the right answer against a float64
reference. ``tools/fuzz_campaign.py`` runs these with many more examples.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sparsegemm import BitmapMatrix
from test_fuzz import (
    CLEAR_ERRORS,
    FLOATS,
    LAYOUTS,
    VALUE_DTYPES,
    dense_operands,
    format_product,
    fuzz_settings,
    relayout,
)


@st.composite
def bitmap_parts(draw, max_rows: int = 6, max_cols: int = 140):
    """A valid (data, bits, shape) and the dense matrix it stores."""
    rows = draw(st.integers(0, max_rows))
    cols = draw(st.integers(0, max_cols))
    dense = draw(hnp.arrays(np.float64, (rows, cols),
                            elements=st.one_of(st.just(0.0), FLOATS.filter(lambda v: v != 0))))
    stored = np.isnan(dense) | (dense != 0)
    words = -(-cols // 64)
    padded = np.zeros((rows, words * 64), dtype=bool)
    padded[:, :cols] = stored
    weights = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
    bits = (padded.reshape(rows, words, 64) * weights).sum(axis=2, dtype=np.uint64)
    return dense[stored], bits, (rows, cols), np.where(stored, dense, 0.0)


@fuzz_settings
@given(parts=bitmap_parts(), defect=st.sampled_from(
    ["none", "extra_value", "missing_value", "bit_past_end", "bits_shape", "bits_dtype",
     "value_dtype", "shape"]), data_=st.data())
def test_fuzz_bitmap_from_arrays(parts, defect, data_):
    data, bits, shape, dense = parts
    data, bits = data.copy(), bits.copy()
    rows, cols = shape
    if defect == "extra_value":
        data = np.append(data, 1.0)
    elif defect == "missing_value" and len(data):
        data = data[:-1]
    elif defect == "bit_past_end" and rows and cols % 64:
        bits[data_.draw(st.integers(0, rows - 1)), -1] |= np.uint64(1) << np.uint64(63)
    elif defect == "bits_shape":
        bits = bits[:, :-1] if bits.size else np.zeros((rows + 1, 1), np.uint64)
    elif defect == "bits_dtype":
        bits = bits.astype(data_.draw(st.sampled_from([np.float64, np.bool_, np.complex64])))
    elif defect == "value_dtype":
        with np.errstate(all="ignore"):
            data = data.astype(data_.draw(st.sampled_from(VALUE_DTYPES)))
    elif defect == "shape":
        shape = (rows, cols + data_.draw(st.sampled_from([64, -1 if cols else 64])))
    reference = _decode(data, bits, shape)
    try:
        matrix = BitmapMatrix((data, bits), shape=shape)
    except CLEAR_ERRORS:
        assert reference is None or np.asarray(data).dtype.kind not in "fiub", \
            f"valid bitmap arrays were rejected ({defect})"
        return
    assert reference is not None, f"invalid bitmap arrays were accepted ({defect})"
    np.testing.assert_array_equal(matrix.to_dense(), reference(matrix.dtype))


def _decode(data, bits, shape):
    """A function of the dtype giving the dense matrix (data, bits, shape) describe, or None
    when they are inconsistent: the plain reference the constructor is checked against."""
    rows, cols = shape
    words = -(-cols // 64) if cols >= 0 else -1
    bits = np.asarray(bits)
    if rows < 0 or cols < 0 or bits.shape not in ((rows, words), (rows * words,)):
        return None
    if bits.size and bits.dtype.kind not in "iu":
        return None
    if bits.size == 0:
        flags = np.zeros((rows, words * 64), dtype=bool)
    else:
        flags = np.unpackbits(bits.astype(np.uint64).reshape(rows, words).view(np.uint8),
                              axis=1, bitorder="little").astype(bool)
    if flags[:, cols:].any() or flags.sum() != np.asarray(data).size:
        return None

    def dense(dtype):
        out = np.zeros((rows, cols), dtype=dtype)
        with np.errstate(all="ignore"):
            out[flags[:, :cols]] = np.asarray(data).astype(dtype)
        return out
    return dense


@fuzz_settings
@given(dense=hnp.arrays(st.sampled_from(VALUE_DTYPES[:-1]),
                        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=70),
                        elements=st.sampled_from([0, 0, 0, 1])),
       layout=st.sampled_from(LAYOUTS))
def test_fuzz_bitmap_from_dense(dense, layout):
    dense = relayout(dense, layout)
    try:
        matrix = BitmapMatrix.from_dense(dense)
    except CLEAR_ERRORS:
        assert dense.ndim != 2 or dense.dtype.kind == "c", "a valid dense matrix was rejected"
        return
    np.testing.assert_array_equal(matrix.to_dense(), dense.astype(matrix.dtype))


@fuzz_settings
@given(parts=bitmap_parts(), dtype=st.sampled_from([np.float32, np.float64]), data_=st.data(),
       threads=st.integers(1, 3), isa_index=st.integers(0, 2), as_linear=st.booleans())
def test_fuzz_bitmap_products(parts, dtype, data_, threads, isa_index, as_linear):
    data, bits, shape, _ = parts
    a = BitmapMatrix((data.astype(dtype), bits), shape=shape)
    b = data_.draw(dense_operands(shape[1]))
    as_linear = as_linear and b.ndim == 2  # linear(x) reads x's last axis: x = b.T
    result = format_product(a, b, threads, isa_index, as_linear)
    if result is None:
        return
    stored = a.to_dense().astype(np.float64)
    with np.errstate(all="ignore"):
        # Unstored entries never multiply b, so Inf/NaN in b reach only the rows that store
        # the column: mask them out of the reference the way the kernel does.
        reference = np.where(stored != 0, stored, 0.0) @ np.nan_to_num(b.astype(np.float64))
        finite = np.isfinite(reference) & np.isfinite(
            np.abs(stored) @ np.abs(b.astype(np.float64)))
        scale = np.abs(stored) @ np.abs(np.nan_to_num(b.astype(np.float64))) + 1
        if as_linear:
            reference, finite, scale = reference.T, finite.T, scale.T
    assert result.shape == reference.shape
    tolerance = 1e-3 if dtype == np.float32 or b.dtype.itemsize < 8 else 1e-9
    assert np.all(np.abs(result[finite] - reference[finite]) <= tolerance * scale[finite])
