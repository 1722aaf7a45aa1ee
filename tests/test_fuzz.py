"""Hypothesis fuzzing of every constructor and product entry point.

Each input either raises a clear ValueError/TypeError/MemoryError or gives the
right answer (checked against scipy / a float64 reference). Inputs are random
and adversarial: wrong dtypes and ranks, extreme integers, zero sizes, NaN/Inf,
strided/reversed/misaligned layouts, and valid CSR arrays with one defect.

The example count per test is small by default (CI); ``tools/fuzz_campaign.py``
runs the same tests with ``SPARSEGEMM_FUZZ_EXAMPLES`` set much higher.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sparsegemm
from sparsegemm import CSRMatrix, _core, linear, sparse_mm

FUZZ_EXAMPLES = int(os.environ.get("SPARSEGEMM_FUZZ_EXAMPLES", "30"))
fuzz_settings = settings(max_examples=FUZZ_EXAMPLES)

CLEAR_ERRORS = (ValueError, TypeError, MemoryError)

EXTREME_INTS = [0, 1, -1, 2, 3, 2**31 - 1, 2**31, -(2**31), 2**32, 2**63 - 1, -(2**63)]
INDEX_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64,
                np.float64, np.bool_, np.dtype(">i8"), object]
VALUE_DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_, np.complex64,
                np.dtype(">f8"), object]
SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e6, -1e6, np.nan, np.inf, -np.inf]
# Bounded magnitudes: float32 sums of these cannot overflow, so the float64
# reference stays comparable (Inf/NaN are still fuzzed explicitly).
FLOATS = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(-1e6, 1e6, width=32))
LAYOUTS = ["c", "f", "reversed", "strided", "misaligned", "byteswapped"]


def relayout(array: np.ndarray, layout: str) -> np.ndarray:
    """The same values in another memory layout."""
    if layout == "f":
        return np.asfortranarray(array)
    if layout == "reversed":
        slices = (slice(None, None, -1),) * array.ndim
        return np.ascontiguousarray(array[slices])[slices]
    if layout == "strided" and array.ndim:
        return np.repeat(array, 2, axis=-1)[..., ::2]
    if layout == "misaligned" and array.dtype.kind in "fiub" and array.itemsize > 1:
        raw = np.zeros(array.nbytes + 1, np.uint8)[1:].view(array.dtype).reshape(array.shape)
        raw[...] = array
        return raw
    if layout == "byteswapped" and array.dtype.kind in "fiu" and array.itemsize > 1:
        return array.astype(array.dtype.newbyteorder("S"))
    return array


@st.composite
def csr_parts(draw, max_side: int = 12):
    """A valid (data, indices, indptr, shape) built from a random dense matrix."""
    rows = draw(st.integers(0, max_side))
    cols = draw(st.integers(0, max_side))
    dense = draw(hnp.arrays(np.float64, (rows, cols),
                            elements=st.one_of(st.just(0.0), FLOATS.filter(lambda v: v != 0))))
    csr = sp.csr_array(np.where(np.isnan(dense) | (dense != 0), dense, 0.0))
    csr.sort_indices()
    return csr.data, csr.indices, csr.indptr, (rows, cols)


def _mutate(draw, data, indices, indptr, shape):
    """Apply one random defect (or none) to valid CSR parts."""
    data, indices, indptr = data.copy(), indices.copy(), indptr.copy()
    kind = draw(st.sampled_from([
        "none", "indptr_entry", "indices_entry", "swap_indices", "drop_data", "extra_data",
        "indptr_length", "index_dtype", "value_dtype", "two_dimensional", "shape",
    ]))
    if kind == "indptr_entry":
        position = draw(st.integers(0, len(indptr) - 1))
        indptr = indptr.astype(np.int64)
        indptr[position] = draw(st.sampled_from(EXTREME_INTS[:-2] + [-(2**62), 2**62]))
    elif kind == "indices_entry" and len(indices):
        indices = indices.astype(np.int64)
        indices[draw(st.integers(0, len(indices) - 1))] = draw(
            st.sampled_from(EXTREME_INTS[:-2] + [shape[1], shape[1] - 1]))
    elif kind == "swap_indices" and len(indices) >= 2:
        i = draw(st.integers(0, len(indices) - 2))
        indices[[i, i + 1]] = indices[[i + 1, i]]
    elif kind == "drop_data" and len(data):
        data = data[:-1]
    elif kind == "extra_data":
        data = np.append(data, 1.0)
    elif kind == "indptr_length":
        indptr = indptr[:-1] if draw(st.booleans()) else np.append(indptr, indptr[-1])
    elif kind == "index_dtype":
        dtype = draw(st.sampled_from(INDEX_DTYPES))
        with np.errstate(all="ignore"):
            if draw(st.booleans()):
                indices = indices.astype(dtype)
            else:
                indptr = indptr.astype(dtype)
    elif kind == "value_dtype":
        with np.errstate(all="ignore"):
            data = data.astype(draw(st.sampled_from(VALUE_DTYPES)))
    elif kind == "two_dimensional":
        which = draw(st.sampled_from(["data", "indices", "indptr"]))
        if which == "data":
            data = data[None]
        elif which == "indices":
            indices = indices[None]
        else:
            indptr = indptr[None]
    elif kind == "shape":
        shape = (draw(st.sampled_from(EXTREME_INTS + [shape[0]])),
                 draw(st.sampled_from(EXTREME_INTS + [shape[1]])))
    return kind, data, indices, indptr, shape


def clearly_valid_csr(data, indices, indptr, shape) -> bool:
    """True for a canonical CSR (sorted unique indices per row) in the plainest types:
    native float32/float64 values, int32/int64 indices, a small non-negative shape.

    Such operands must be accepted; other inputs may or may not be, so a test
    that swallows a clear error asserts this is False for the rejected input.
    """
    try:
        rows, cols = (int(side) for side in shape)
    except (TypeError, ValueError):
        return False
    if not (0 <= rows <= 1000 and 0 <= cols <= 1000):
        return False
    arrays = [np.asarray(a) for a in (data, indices, indptr)]
    if any(a.ndim != 1 or not a.dtype.isnative for a in arrays):
        return False
    data, indices, indptr = arrays
    if data.dtype not in (np.float32, np.float64):
        return False
    if indices.dtype not in (np.int32, np.int64) or indptr.dtype not in (np.int32, np.int64):
        return False
    if len(indptr) != rows + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        return False
    if indptr[-1] != len(indices) or len(data) != len(indices):
        return False
    if len(indices) and (indices.min() < 0 or indices.max() >= cols):
        return False
    return all(np.all(np.diff(indices[start:end]) > 0)
               for start, end in zip(indptr[:-1], indptr[1:]))


def assert_matches_scipy(matrix: CSRMatrix, data, indices, indptr, shape) -> None:
    """An accepted matrix must be a valid canonical CSR that scipy reads the same way."""
    reference = sp.csr_array((np.asarray(data).astype(np.float64), np.asarray(indices),
                              np.asarray(indptr)), shape=shape)
    reference.check_format(full_check=True)
    assert reference.has_canonical_format
    assert matrix.shape == tuple(shape)
    np.testing.assert_array_equal(matrix.indptr, reference.indptr)
    np.testing.assert_array_equal(matrix.indices, reference.indices)
    np.testing.assert_array_equal(matrix.data.astype(np.float64),
                                  np.asarray(data).astype(matrix.dtype).astype(np.float64))


@fuzz_settings
@given(parts=csr_parts(), data_=st.data())
def test_fuzz_csr_from_arrays(parts, data_):
    kind, data, indices, indptr, shape = _mutate(data_.draw, *parts)
    layout = data_.draw(st.sampled_from(LAYOUTS))
    data, indices, indptr = (relayout(a, layout) for a in (data, indices, indptr))
    try:
        matrix = CSRMatrix((data, indices, indptr), shape=shape)
    except CLEAR_ERRORS:
        assert kind != "none", "a valid CSR matrix was rejected"
        return
    assert_matches_scipy(matrix, data, indices, indptr, shape)


@fuzz_settings
@given(data=hnp.arrays(st.sampled_from(VALUE_DTYPES), hnp.array_shapes(min_dims=0, max_dims=2,
                                                                       min_side=0, max_side=6)),
       indices=hnp.arrays(st.sampled_from(INDEX_DTYPES),
                          hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6)),
       indptr=hnp.arrays(st.sampled_from(INDEX_DTYPES),
                         hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6)),
       shape=st.tuples(st.one_of(st.integers(0, 6), st.sampled_from(EXTREME_INTS)),
                       st.one_of(st.integers(0, 6), st.sampled_from(EXTREME_INTS))))
def test_fuzz_csr_random_arrays(data, indices, indptr, shape):
    try:
        matrix = CSRMatrix((data, indices, indptr), shape=shape)
    except CLEAR_ERRORS:
        assert not clearly_valid_csr(data, indices, indptr, shape), "a valid CSR was rejected"
        return
    assert_matches_scipy(matrix, data, indices, indptr, shape)


def test_clearly_valid_csr_knows_valid_from_invalid():
    data, indices, indptr = np.array([1.0, 2.0]), np.array([0, 2]), np.array([0, 1, 2])
    assert clearly_valid_csr(data, indices, indptr, (2, 3))
    assert not clearly_valid_csr(data, indices, indptr, (2, 2))  # index 2 out of range
    assert not clearly_valid_csr(data, indices[::-1].copy(), np.array([0, 2, 2]), (2, 3))
    assert not clearly_valid_csr(data[:1], indices, indptr, (2, 3))
    assert not clearly_valid_csr(data.astype(">f8"), indices, indptr, (2, 3))


@fuzz_settings
@given(dense=hnp.arrays(st.sampled_from(VALUE_DTYPES[:-1]),
                        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9),
                        elements=None),
       threshold=st.one_of(st.sampled_from([0.0, 0.5, -1.0, np.nan, np.inf]), st.floats()),
       layout=st.sampled_from(LAYOUTS))
def test_fuzz_from_dense(dense, threshold, layout):
    dense = relayout(dense, layout)
    try:
        matrix = CSRMatrix.from_dense(dense, threshold)
    except CLEAR_ERRORS:
        assert (dense.ndim != 2 or dense.dtype.kind == "c" or not threshold >= 0), \
            "a valid dense matrix was rejected"
        return
    values = dense.astype(matrix.dtype)
    # Compared exactly, in float64 (which holds every float32 value).
    keep = np.isnan(values) | (np.abs(values.astype(np.float64)) > threshold)
    np.testing.assert_array_equal(matrix.to_dense(), np.where(keep, values, 0))
    assert matrix.nnz == np.count_nonzero(keep)


SCIPY_FORMATS = ["csr", "csc", "coo", "bsr", "lil", "dok", "dia"]


@fuzz_settings
@given(rows=st.integers(0, 10), cols=st.integers(0, 10), fmt=st.sampled_from(SCIPY_FORMATS),
       array_api=st.booleans(), dtype=st.sampled_from([np.float32, np.float64, np.int16, np.bool_,
                                                       np.complex64]),
       data_=st.data())
def test_fuzz_from_scipy(rows, cols, fmt, array_api, dtype, data_):
    entries = data_.draw(st.lists(st.tuples(st.integers(0, max(rows - 1, 0)),
                                            st.integers(0, max(cols - 1, 0)), FLOATS),
                                  max_size=rows * cols * 2))
    row = np.array([e[0] for e in entries], np.int64)
    col = np.array([e[1] for e in entries], np.int64)
    with np.errstate(all="ignore"):
        values = np.array([e[2] for e in entries], np.float64).astype(dtype)
    coo_cls = sp.coo_array if array_api else sp.coo_matrix
    coo = coo_cls((values, (row, col)), shape=(rows, cols))  # duplicates, any order
    with np.errstate(invalid="ignore"):  # scipy itself warns summing inf + -inf
        source = coo.asformat(fmt) if fmt != "coo" else coo
    before = source.copy()
    try:
        matrix = CSRMatrix.from_scipy(source)
    except CLEAR_ERRORS:
        assert np.dtype(dtype).kind == "c", "a valid scipy matrix was rejected"
        return
    with np.errstate(invalid="ignore"):
        expected = sp.csr_array(coo).astype(np.float64)
        expected.sum_duplicates()
        np.testing.assert_array_equal(matrix.to_dense(), expected.toarray().astype(matrix.dtype))
    # The input is never modified: not its values, nor the order of its arrays.
    np.testing.assert_array_equal(source.toarray(), before.toarray())
    for name in ("data", "indices", "indptr", "row", "col", "offsets"):
        if hasattr(before, name):
            np.testing.assert_array_equal(getattr(source, name), getattr(before, name))


@st.composite
def dense_operands(draw, rows: int, *, vector_ok: bool = True):
    """A dense operand with ``rows`` rows (sometimes a wrong count), any dtype/layout."""
    if draw(st.integers(0, 9)) == 0:
        rows = draw(st.sampled_from([0, 1, rows + 1]))
    shape = (rows,) if vector_ok and draw(st.booleans()) else (rows, draw(st.integers(0, 20)))
    if draw(st.integers(0, 19)) == 0:
        shape = shape + (2,)  # 3-d: always wrong
    dtype = draw(st.sampled_from(VALUE_DTYPES[:-1]))
    array = draw(hnp.arrays(np.float64, shape, elements=FLOATS))
    with np.errstate(all="ignore"):
        array = array.astype(dtype)
    return relayout(array, draw(st.sampled_from(LAYOUTS)))


def format_product(a, b, threads, isa_index, as_linear):
    """``linear(b.T, a)`` or ``sparse_mm(a, b)`` on one of the CPU's ISAs, for the fuzz tests
    of every format; None after a clear error, which only invalid operands may raise."""
    isas = sparsegemm.available_isas()
    with sparsegemm.use_isa(isas[isa_index % len(isas)]):
        try:
            return (linear(b.T, a, num_threads=threads) if as_linear
                    else sparse_mm(a, b, num_threads=threads))
        except CLEAR_ERRORS:
            assert (b.ndim not in (1, 2) or b.shape[0] != a.shape[1] or b.dtype.kind == "c"), \
                "valid operands were rejected"
            return None


@fuzz_settings
@given(parts=csr_parts(), dtype=st.sampled_from([np.float32, np.float64]), data_=st.data(),
       threads=st.integers(1, 3), isa_index=st.integers(0, 2))
def test_fuzz_sparse_mm(parts, dtype, data_, threads, isa_index, check_sparse_mm):
    data, indices, indptr, shape = parts
    a = CSRMatrix((data.astype(dtype), indices, indptr), shape=shape)
    b = data_.draw(dense_operands(shape[1]))
    use_out = data_.draw(st.booleans())
    isas = sparsegemm.available_isas()
    with sparsegemm.use_isa(isas[isa_index % len(isas)]):
        try:
            if use_out:
                out_dtype = np.result_type(dtype, b.dtype, np.float32)
                if out_dtype.kind not in "f":
                    out_dtype = np.dtype(np.float64)
                out = np.full((shape[0],) + b.shape[1:], np.nan, out_dtype)
                result = sparse_mm(a, b, out=out, num_threads=threads)
                assert result is out
            else:
                result = sparse_mm(a, b, num_threads=threads)
        except CLEAR_ERRORS:
            assert (b.ndim not in (1, 2) or b.shape[0] != shape[1] or b.dtype.kind == "c"
                    or (use_out and out_dtype != np.result_type(dtype, b.dtype, np.float32)
                        .newbyteorder("="))), "valid operands were rejected"
            return
    check_sparse_mm(result, a, b)


@fuzz_settings
@given(parts=csr_parts(), dtype=st.sampled_from([np.float32, np.float64]), data_=st.data(),
       leading=st.lists(st.integers(0, 3), max_size=2), bias_kind=st.sampled_from(
           ["none", "right", "wrong_length", "wrong_dtype", "2d"]))
def test_fuzz_linear(parts, dtype, data_, leading, bias_kind, check_linear):
    data, indices, indptr, shape = parts
    weight = CSRMatrix((data.astype(dtype), indices, indptr), shape=shape)
    x = data_.draw(dense_operands(shape[1], vector_ok=False))
    if x.ndim == 2:
        x = np.broadcast_to(x.T, tuple(leading) + x.T.shape)  # (..., in_features)
    bias = {"none": None, "right": np.linspace(-1, 1, shape[0]),
            "wrong_length": np.ones(shape[0] + 1), "wrong_dtype": np.ones(shape[0], np.complex64),
            "2d": np.ones((1, shape[0]))}[bias_kind]
    try:
        result = linear(x, weight, bias)
    except CLEAR_ERRORS:
        assert (x.ndim == 0 or x.shape[-1] != shape[1] or x.dtype.kind == "c"
                or bias_kind not in ("none", "right")), "valid operands were rejected"
        return
    check_linear(result, x, weight, bias)


CORE_ARRAY = hnp.arrays(st.sampled_from([np.float32, np.float64, np.int32, np.int64]),
                        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
                        elements=st.sampled_from([0, 1, -1, 2]))


@fuzz_settings
@given(b=CORE_ARRAY, out=CORE_ARRAY, bias=st.one_of(st.none(), CORE_ARRAY),
       b_layout=st.sampled_from(LAYOUTS), out_layout=st.sampled_from(["c", "f", "reversed",
                                                                       "strided", "misaligned"]),
       linear_op=st.booleans(), threads=st.integers(-2, 4), data_=st.data())
def test_fuzz_core_products(b, out, bias, b_layout, out_layout, linear_op, threads, data_):
    rows, cols = data_.draw(st.integers(0, 7)), data_.draw(st.integers(0, 7))
    matrix_dtype = data_.draw(st.sampled_from([np.float32, np.float64]))
    dense = np.where(np.arange(rows * cols).reshape(rows, cols) % 3 == 0, 1.5, 0.0)
    handle = CSRMatrix.from_dense(dense.astype(matrix_dtype))._handle
    b = relayout(b, b_layout)
    out = relayout(out, out_layout)
    entry = _core.csr_linear if linear_op else _core.csr_matmul
    try:
        entry(handle, b, out, bias, threads)
    except CLEAR_ERRORS:
        assert not clearly_valid_core_product(
            dense.shape, matrix_dtype, b, out, bias, linear_op, threads
        ), "valid operands were rejected"
        return
    # Accepted: the operands were consistent, and out holds the product.
    b64 = b.astype(np.float64)
    expected = b64 @ dense.T if linear_op else dense @ b64
    if bias is not None:
        expected = expected + (bias if linear_op else bias[:, None])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def clearly_valid_core_product(shape, dtype, b, out, bias, linear_op, threads) -> bool:
    """True when a core product's operands are consistent in the plainest way: the
    matrix's dtype throughout, C-contiguous, aligned, writeable ``out``, matching
    shapes, a contiguous bias of the right length (or None), threads >= 1."""
    rows, cols = shape
    arrays = [b, out] + ([] if bias is None else [bias])
    if any(a.dtype != np.dtype(dtype) or not a.dtype.isnative or not a.flags.c_contiguous
           or not a.flags.aligned for a in arrays):
        return False
    if b.ndim != 2 or out.ndim != 2 or not out.flags.writeable or threads < 1:
        return False
    if linear_op:
        expected_out, bias_length, inner = (b.shape[0], rows), rows, b.shape[1]
    else:
        expected_out, bias_length, inner = (rows, b.shape[1]), rows, b.shape[0]
    if inner != cols or out.shape != expected_out:
        return False
    return bias is None or bias.shape == (bias_length,)


@fuzz_settings
@given(rows=st.integers(0, 7), cols=st.integers(0, 7), n=st.integers(0, 7),
       dtype=st.sampled_from([np.float32, np.float64]), linear_op=st.booleans(),
       with_bias=st.booleans(), threads=st.integers(1, 4), data_=st.data())
def test_fuzz_core_products_accept_valid_operands(rows, cols, n, dtype, linear_op, with_bias,
                                                  threads, data_):
    values = data_.draw(hnp.arrays(np.float64, (rows, cols), elements=st.sampled_from([0, 1, -2])))
    b = data_.draw(hnp.arrays(dtype, (n, cols) if linear_op else (cols, n),
                              elements=st.sampled_from([0, 1, -1, 2])))
    out = np.full((n, rows) if linear_op else (rows, n), np.nan, dtype)
    bias = np.linspace(-1, 1, rows).astype(dtype) if with_bias else None
    assert clearly_valid_core_product((rows, cols), dtype, b, out, bias, linear_op, threads)
    handle = CSRMatrix.from_dense(values.astype(dtype))._handle
    (_core.csr_linear if linear_op else _core.csr_matmul)(handle, b, out, bias, threads)
    expected = b @ values.T if linear_op else values @ b
    if bias is not None:
        expected = expected + (bias if linear_op else bias[:, None])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


@fuzz_settings
@given(rows=st.one_of(st.integers(-2, 6), st.sampled_from(EXTREME_INTS)),
       cols=st.one_of(st.integers(-2, 6), st.sampled_from(EXTREME_INTS)),
       indptr=hnp.arrays(st.sampled_from([np.int32, np.int64, np.uint64, np.float64]),
                         hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=7)),
       indices=hnp.arrays(st.sampled_from([np.int32, np.int64]),
                          hnp.array_shapes(min_dims=1, max_dims=1, min_side=0, max_side=6)),
       data=hnp.arrays(st.sampled_from([np.float32, np.float64]),
                       hnp.array_shapes(min_dims=1, max_dims=1, min_side=0, max_side=6)))
def test_fuzz_core_from_arrays(rows, cols, indptr, indices, data):
    cls = _core.CsrMatrixF32 if data.dtype == np.float32 else _core.CsrMatrixF64
    try:
        handle = cls.from_arrays(rows, cols, indptr, indices, data)
    except CLEAR_ERRORS:
        # the core binding takes int32 indices only (the Python API converts int64)
        assert not (clearly_valid_csr(data, indices, indptr, (rows, cols))
                    and indices.dtype == np.int32), "a valid CSR was rejected"
        return
    matrix = CSRMatrix._from_handle(handle)
    assert_matches_scipy(matrix, data, indices, indptr, (rows, cols))
