"""Hypothesis fuzzing of the BSR constructors and products and of the sparse convolution.

The same contract as tests/test_fuzz.py (whose strategies this reuses): each
input either raises a clear ValueError/TypeError/MemoryError, and then only
because something about it was wrong, or gives the right answer against a
float64 reference. ``tools/fuzz_campaign.py`` runs these with many more examples.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sparsegemm import BSRMatrix, conv2d
from test_fuzz import (
    CLEAR_ERRORS,
    EXTREME_INTS,
    FLOATS,
    INDEX_DTYPES,
    LAYOUTS,
    VALUE_DTYPES,
    dense_operands,
    format_product,
    fuzz_settings,
    relayout,
)

BLOCK_EDGES = st.sampled_from([1, 2, 3, 4, 8, 16])


@st.composite
def bsr_parts(draw, max_blocks: int = 4):
    """A valid (data, indices, indptr, shape, blocksize) from a random block-sparse matrix."""
    r, c = draw(BLOCK_EDGES), draw(BLOCK_EDGES)
    rows = draw(st.integers(0, max_blocks)) * r
    cols = draw(st.integers(0, max_blocks)) * c
    dense = draw(hnp.arrays(np.float64, (rows, cols),
                            elements=st.one_of(st.just(0.0), FLOATS.filter(lambda v: v != 0))))
    bsr = sp.bsr_array(dense, blocksize=(r, c))
    bsr.sort_indices()
    return bsr.data, bsr.indices, bsr.indptr, (rows, cols), (r, c)


def _reference_dense(data, indices, indptr, shape, blocksize) -> np.ndarray:
    """The dense matrix the arrays describe; edge blocks cropped (scipy needs whole blocks)."""
    r, c = blocksize
    rows, cols = shape
    padded = np.zeros((-(-rows // r) * r, -(-cols // c) * c))
    blocks = np.asarray(data, np.float64).reshape(-1, r, c)
    for block_row in range(len(indptr) - 1):
        for j in range(indptr[block_row], indptr[block_row + 1]):
            col = indices[j]
            padded[block_row * r:(block_row + 1) * r, col * c:(col + 1) * c] = blocks[j]
    return padded[:rows, :cols]


@fuzz_settings
@given(parts=bsr_parts(), defect=st.sampled_from(
    ["none", "indptr_entry", "indices_entry", "swap_indices", "drop_block", "index_dtype",
     "value_dtype", "blocksize", "shape"]), data_=st.data())
def test_fuzz_bsr_from_arrays(parts, defect, data_):
    data, indices, indptr, shape, blocksize = parts
    data, indices, indptr = data.copy(), indices.astype(np.int64), indptr.astype(np.int64)
    if defect == "indptr_entry":
        indptr[data_.draw(st.integers(0, len(indptr) - 1))] = data_.draw(
            st.sampled_from(EXTREME_INTS[:-2]))
    elif defect == "indices_entry" and len(indices):
        indices[data_.draw(st.integers(0, len(indices) - 1))] = data_.draw(
            st.sampled_from(EXTREME_INTS[:-2] + [shape[1] // blocksize[1]]))
    elif defect == "swap_indices" and len(indices) >= 2:
        i = data_.draw(st.integers(0, len(indices) - 2))
        indices[[i, i + 1]] = indices[[i + 1, i]]
    elif defect == "drop_block" and len(data):
        data = data[:-1]
    elif defect == "index_dtype":
        with np.errstate(all="ignore"):
            indices = indices.astype(data_.draw(st.sampled_from(INDEX_DTYPES)))
    elif defect == "value_dtype":
        with np.errstate(all="ignore"):
            data = data.astype(data_.draw(st.sampled_from(VALUE_DTYPES)))
    elif defect == "blocksize":
        blocksize = (data_.draw(st.sampled_from([0, -1, 65, 2**31])), blocksize[1])
    elif defect == "shape":
        shape = (data_.draw(st.sampled_from(EXTREME_INTS + [shape[0]])), shape[1])
    try:
        matrix = BSRMatrix((data, indices, indptr), shape=shape, blocksize=blocksize)
    except CLEAR_ERRORS:
        assert defect != "none", "valid BSR arrays were rejected"
        return
    # Accepted: it must be what scipy reads from the same arrays.
    expected = _reference_dense(data, indices, indptr, shape, blocksize)
    np.testing.assert_array_equal(matrix.to_dense().astype(np.float64),
                                  expected.astype(matrix.dtype).astype(np.float64))


@fuzz_settings
@given(dense=hnp.arrays(st.sampled_from(VALUE_DTYPES[:-1]),
                        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9),
                        elements=st.sampled_from([0, 0, 0, 1])),
       blocksize=st.tuples(st.integers(-1, 10), st.integers(-1, 10)),
       layout=st.sampled_from(LAYOUTS))
def test_fuzz_bsr_from_dense(dense, blocksize, layout):
    dense = relayout(dense, layout)
    try:
        matrix = BSRMatrix.from_dense(dense, blocksize)
    except CLEAR_ERRORS:
        assert (dense.ndim != 2 or dense.dtype.kind == "c" or min(blocksize) < 1), \
            "a valid dense matrix and blocksize were rejected"
        return
    np.testing.assert_array_equal(matrix.to_dense(), dense.astype(matrix.dtype))


@fuzz_settings
@given(parts=bsr_parts(), dtype=st.sampled_from([np.float32, np.float64]), data_=st.data(),
       threads=st.integers(1, 3), isa_index=st.integers(0, 2), as_linear=st.booleans())
def test_fuzz_bsr_products(parts, dtype, data_, threads, isa_index, as_linear):
    data, indices, indptr, shape, blocksize = parts
    a = BSRMatrix((data.astype(dtype), indices, indptr), shape=shape, blocksize=blocksize)
    b = data_.draw(dense_operands(shape[1]))
    as_linear = as_linear and b.ndim == 2  # linear(x) reads x's last axis: x = b.T
    result = format_product(a, b, threads, isa_index, as_linear)
    if result is None:
        return
    with np.errstate(all="ignore"):
        reference = a.to_dense().astype(np.float64) @ b.astype(np.float64)
        if as_linear:
            reference = reference.T
        finite = np.isfinite(reference)
        tolerance = 1e-3 if dtype == np.float32 or b.dtype.itemsize < 8 else 1e-9
        scale = np.abs(a.to_dense()).astype(np.float64) @ np.abs(b.astype(np.float64)) + 1
        if as_linear:
            scale = scale.T
    assert result.shape == reference.shape
    assert np.all(np.abs(result[finite] - reference[finite]) <= tolerance * scale[finite])


@fuzz_settings
@given(batch=st.integers(0, 2), cin=st.integers(0, 3), cout=st.integers(0, 3),
       height=st.integers(0, 7), width=st.integers(0, 7), kernel=st.tuples(
           st.integers(-1, 4), st.integers(-1, 4)),
       stride=st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
       padding=st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
       dilation=st.tuples(st.integers(-1, 2), st.integers(-1, 2)),
       layout=st.sampled_from(LAYOUTS), dtype=st.sampled_from([np.float32, np.float64]),
       data_=st.data())
def test_fuzz_conv2d(batch, cin, cout, height, width, kernel, stride, padding, dilation, layout,
                     dtype, data_):
    kh, kw = max(kernel[0], 1), max(kernel[1], 1)
    weight = data_.draw(hnp.arrays(np.float64, (cout, cin, kh, kw),
                                   elements=st.sampled_from([0.0, 0.0, 1.0, -0.5])))
    x = relayout(data_.draw(hnp.arrays(np.float64, (batch, cin, height, width),
                                       elements=st.sampled_from([0.0, 1.0, -2.0, 0.25]))), layout)
    csr = sp.csr_array(weight.reshape(cout, cin * kh * kw).astype(dtype))
    valid = (min(kernel) >= 1 and min(stride) >= 1 and min(padding) >= 0 and min(dilation) >= 1
             and height + 2 * padding[0] >= dilation[0] * (kh - 1) + 1
             and width + 2 * padding[1] >= dilation[1] * (kw - 1) + 1)
    try:
        result = conv2d(x, csr, kernel, stride=stride, padding=padding, dilation=dilation)
    except CLEAR_ERRORS:
        # Zero sizes may be refused too; a full, well-formed geometry may not.
        assert not (valid and min(batch, cin, cout, height, width) > 0), \
            "a valid convolution was rejected"
        return
    assert valid, "an impossible geometry was accepted"
    expected = conv2d_reference(x.astype(np.float64), weight, stride, padding, dilation)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def conv2d_reference(x, weight, stride, padding, dilation) -> np.ndarray:
    """Plain float64 convolution: one strided slice of the padded input per kernel tap."""
    batch, _, height, width = x.shape
    cout, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((batch, cout, oh, ow))
    for i in range(kh):
        for j in range(kw):
            taps = padded[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                          j * dw:j * dw + sw * (ow - 1) + 1:sw]
            out += np.einsum("nchw,oc->nohw", taps, weight[:, :, i, j])
    return out
