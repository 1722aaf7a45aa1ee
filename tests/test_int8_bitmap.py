"""Int8 bitmap weights (sparsegemm.Int8BitmapMatrix) on every ISA this CPU runs.

The integer product (``int_product``) must equal a numpy int64 reference
exactly; ``linear`` must equal the reference built from the same quantized
integers up to float rounding, and stay within 2% of the unquantized float
product. One vector runs the batch-1 kernel (several rows walked together,
pshufb expansion; on AVX-512 with VBMI2 and VNNI, byte expand loads and
vpdpbusd), several the small-batch kernel (a tile of rows x 256 columns
expanded once). The ``isa_with_extensions`` fixture runs the avx512 level
both with and without those extensions.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsegemm
from sparsegemm import Int8BitmapMatrix, _core, linear
from sparsegemm.quantized import MAX_INT8_COLS

SIZES = [1, 7, 8, 9, 63, 64, 65, 127, 128, 129]


def quantize_rows(a: np.ndarray, reciprocal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scales) per row, as the documented semantics say: for
    weights ``a / scale``; for activations (``reciprocal``) ``a * (1 / scale)``, or
    ``a / scale`` where that reciprocal overflows float32."""
    a = np.asarray(a, np.float32)
    scales = (np.abs(a).max(axis=1, initial=0) / np.float32(127)).astype(np.float32)
    safe = np.where(scales == 0, np.float32(1), scales)[:, None]
    with np.errstate(over="ignore"):
        inverse = np.float32(1) / safe
    if reciprocal:
        scaled = np.where(np.isfinite(inverse), a * inverse, a / safe)
    else:
        scaled = a / safe
    q = np.clip(np.rint(scaled), -127, 127)
    return np.where(scales[:, None] == 0, 0, q).astype(np.int8), scales


def stored_integers(w: Int8BitmapMatrix) -> np.ndarray:
    """The dense int64 matrix of stored q values, decoded from bits and data."""
    rows, cols = w.shape
    mask = np.unpackbits(w.bits.view(np.uint8), axis=1, bitorder="little")[:, :cols]
    q = np.zeros((rows, cols), np.int64)
    q[mask.astype(bool)] = w.data
    return q


def reference_int(w: Int8BitmapMatrix, xq: np.ndarray) -> np.ndarray:
    return xq.astype(np.int64) @ stored_integers(w).T


def reference_linear(w: Int8BitmapMatrix, x: np.ndarray, bias: np.ndarray | None = None):
    """float64 product of the same integers, and a bound on its float32 rounding."""
    xq, sx = quantize_rows(x, reciprocal=True)
    acc = reference_int(w, xq)
    y = acc * (w.scales.astype(np.float64)[None, :] * sx.astype(np.float64)[:, None])
    if bias is not None:
        y = y + bias
    return y, np.abs(y) + (np.abs(bias) if bias is not None else 0)


def random_weight(rng: np.random.Generator, rows: int, cols: int, density: float) -> np.ndarray:
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    return np.where(rng.random((rows, cols)) < density, w, 0).astype(np.float32)


def random_xq(rng: np.random.Generator, batch: int, cols: int) -> np.ndarray:
    return rng.integers(-127, 128, (batch, cols)).astype(np.int8)


@pytest.mark.parametrize("rows", SIZES)
@pytest.mark.parametrize("cols", SIZES)
@pytest.mark.parametrize("density", [0.5, 0.2])
def test_int_product_exact_on_every_size(isa_with_extensions, rows, cols, density, rng):
    # On VNNI CPUs, 2-4 vectors take the batch-1 kernel, more the tile kernel
    # (the quad kernel from 12 vectors on sparse weights, from 5 on very sparse
    # ones: see the tests below).
    w = Int8BitmapMatrix.from_dense(random_weight(rng, rows, cols, density))
    for batch in (1, 3, 6):
        xq = random_xq(rng, batch, cols)
        np.testing.assert_array_equal(w.int_product(xq, num_threads=1), reference_int(w, xq))


@pytest.mark.parametrize("batch", list(range(1, 18)))
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
def test_int_product_exact_on_every_batch(isa_with_extensions, batch, density, rng):
    w = Int8BitmapMatrix.from_dense(random_weight(rng, 37, 300, density))
    xq = random_xq(rng, batch, 300)
    np.testing.assert_array_equal(w.int_product(xq, num_threads=1), reference_int(w, xq))
    if density == 0.0:
        assert w.nnz == 0 and not w.to_dense().any()
    if density == 1.0:
        assert w.nnz == 37 * 300


@pytest.mark.parametrize("batch", [31, 33, 70])
@pytest.mark.parametrize("cols", [64, 2047, 2113])
@pytest.mark.parametrize("density", [0.3, 0.05])
def test_int_product_exact_over_vector_groups_and_long_rows(isa_with_extensions, batch, cols,
                                                               density, rng):
    # Several groups of 16 vectors (the quad and AMX kernels' unit) over rows of up to 34
    # bitmap words; on VNNI CPUs without AMX, density 0.05 runs the quad kernel, 0.3 the tile one.
    w = Int8BitmapMatrix.from_dense(random_weight(rng, 35, cols, density))
    xq = random_xq(rng, batch, cols)
    np.testing.assert_array_equal(w.int_product(xq, num_threads=2), reference_int(w, xq))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("density", [0.3, 0.02])
def test_int_product_exact_over_quad_plan_blocks_and_panels(isa_with_extensions, threads,
                                                            density, rng):
    # 70 rows: two whole blocks of 32 and a partial one, split across threads
    # anywhere; 2113 columns: three panels of 1024, the last partial; empty rows.
    dense = random_weight(rng, 70, 2113, density)
    dense[5] = 0
    dense[40:43] = 0
    w = Int8BitmapMatrix.from_dense(dense)
    for batch in (5, 16, 17, 40):
        xq = random_xq(rng, batch, 2113)
        np.testing.assert_array_equal(w.int_product(xq, num_threads=threads),
                                      reference_int(w, xq))


def vnni_kernels_active() -> bool:
    return _core.active_isa() == "avx512" and _core.use_avx512_extensions()


def quad_kernel_available() -> bool:
    # VNNI without AMX: AMX takes every batch above 4 instead.
    return vnni_kernels_active() and not _core.use_amx()


def test_quad_plan_is_built_only_for_sparse_small_batches(rng):
    sparse = Int8BitmapMatrix.from_dense(random_weight(rng, 64, 512, 0.1))
    dense = Int8BitmapMatrix.from_dense(random_weight(rng, 64, 512, 0.9))
    for w in (sparse, dense):
        w.int_product(random_xq(rng, 1, 512))
        assert w.quad_plan_bytes == 0  # batch 1 never needs it
        w.int_product(random_xq(rng, 16, 512))
    assert dense.quad_plan_bytes == 0
    if quad_kernel_available():
        quads = np.count_nonzero(sparse.to_dense().reshape(64, 128, 4).any(axis=2))
        assert sparse.quad_plan_bytes >= 6 * quads
        assert sparse.copy().quad_plan_bytes == 0  # a rebuilt matrix has its own
    else:
        assert sparse.quad_plan_bytes == 0


def test_quad_kernel_takes_5_to_11_vectors_only_over_very_sparse_weights(isa_with_extensions, rng):
    very_sparse = Int8BitmapMatrix.from_dense(random_weight(rng, 64, 512, 0.05))
    sparse = Int8BitmapMatrix.from_dense(random_weight(rng, 64, 512, 0.18))
    for w in (very_sparse, sparse):
        xq = random_xq(rng, 6, 512)
        np.testing.assert_array_equal(w.int_product(xq), reference_int(w, xq))
    assert (very_sparse.quad_plan_bytes > 0) == quad_kernel_available()
    assert sparse.quad_plan_bytes == 0  # the tile kernel below 12 vectors
    sparse.int_product(random_xq(rng, 12, 512))
    assert (sparse.quad_plan_bytes > 0) == quad_kernel_available()


@pytest.mark.parametrize("cols", [1, 63, 255, 256, 257, 300, 511, 700, 1025])
@pytest.mark.parametrize("stored_in_group", [0, 1, 63, 64, 65, 128, 200, 256])
def test_indexed_walk_exact_on_every_group_fill(isa_with_extensions, cols, stored_in_group, rng):
    # Very sparse rows (the walk by stored columns: batch 1-4, at most 15% stored) with
    # one row whose first group of 256 columns holds `stored_in_group` weights: more than
    # 64 take several steps. Partial last groups of 1-4 words, empty rows.
    rows = 40
    dense = random_weight(rng, rows, cols, 0.03)
    dense[7, :min(cols, 256)] = 0
    dense[7, rng.permutation(min(cols, 256))[:stored_in_group]] = 1.5
    dense[9] = 0
    dense[rows - 1, -1] = -2.0  # the last column of the last row
    w = Int8BitmapMatrix.from_dense(dense)
    assert w.nnz <= 0.15 * rows * cols or cols < 256
    for batch in (1, 2, 4):
        xq = random_xq(rng, batch, cols)
        np.testing.assert_array_equal(w.int_product(xq, num_threads=2), reference_int(w, xq))


def test_index_plan_is_built_only_for_very_sparse_batch_1(rng):
    sparse = Int8BitmapMatrix.from_dense(random_weight(rng, 64, 1000, 0.1))
    denser = Int8BitmapMatrix.from_dense(random_weight(rng, 64, 1000, 0.3))
    for w in (sparse, denser):
        w.int_product(random_xq(rng, 16, 1000))
        assert w.index_plan_bytes == 0  # batches above 4 never need it
        w.int_product(random_xq(rng, 1, 1000))
    assert denser.index_plan_bytes == 0
    if vnni_kernels_active() and _core.use_int8_indexed_walk():
        groups = -(-1000 // 256)
        assert sparse.index_plan_bytes == sparse.nnz + 2 * 64 * groups
        assert sparse.copy().index_plan_bytes == 0  # a rebuilt matrix has its own
    else:
        assert sparse.index_plan_bytes == 0


def assert_switch_round_trips(get, set_to):
    """Turning a kernel switch off and on reads back each time; it is restored after."""
    previous = get()
    try:
        set_to(False)
        assert not get()
        set_to(True)
        assert get()
    finally:
        set_to(previous)


def test_indexed_walk_switch_round_trips():
    assert_switch_round_trips(_core.use_int8_indexed_walk, _core.set_use_int8_indexed_walk)


def test_int_product_extremes_and_empty_rows(isa_with_extensions, rng):
    # Every weight and activation at +-127: the largest sums the int32 holds per column.
    dense = np.where(rng.random((21, 700)) < 0.7, 1.0, -1.0).astype(np.float32)
    dense[::3] = 0  # empty rows
    w = Int8BitmapMatrix.from_dense(dense)
    xq = np.where(rng.random((5, 700)) < 0.5, 127, -127).astype(np.int8)
    for batch in (1, 5):
        result = w.int_product(xq[:batch], num_threads=2)
        np.testing.assert_array_equal(result, reference_int(w, xq[:batch]))
        assert not result[:, ::3].any()


@pytest.mark.parametrize("batch", [1, 3, 6])
@pytest.mark.parametrize("kept_every", [1, 4])
def test_int_product_is_exact_at_the_column_limit(isa_with_extensions, batch, kept_every):
    # The widest matrix allowed, all weights and activations +-127 in one
    # sign or mixed: the sums reach +-2^31 - 1 at most, and the VNNI kernels'
    # sums over x + 128 wrap past int32 on the way there.
    cols = MAX_INT8_COLS
    signs = np.ones((4, cols), np.float32)
    signs[1] = -1
    signs[2, ::2] = -1
    signs[3, 1::7] = 0
    signs[:, np.arange(cols) % kept_every != 0] = 0
    w = Int8BitmapMatrix.from_dense(signs)
    xq = np.full((batch, cols), 127, np.int8)
    if batch > 1:
        xq[1] = -127
        xq[2:, ::3] = -127
    result = w.int_product(xq, num_threads=2)
    expected = reference_int(w, xq)
    assert np.abs(expected).max() == 127 * 127 * len(range(0, cols, kept_every))
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("batch", [1, 4])
def test_int_product_reads_strided_rows(isa_with_extensions, batch, rng):
    w = Int8BitmapMatrix.from_dense(random_weight(rng, 19, 130, 0.4))
    wide = random_xq(rng, batch, 301)
    xq = wide[:, 3:133]  # row stride 301, not a multiple of anything
    np.testing.assert_array_equal(w.int_product(xq), reference_int(w, xq))
    every_other = random_xq(rng, 2 * batch, 130)[::2]
    np.testing.assert_array_equal(w.int_product(every_other), reference_int(w, every_other))


def test_quantization_follows_the_documented_rule(rng):
    dense = random_weight(rng, 50, 97, 0.6)
    dense[3] = 0
    w = Int8BitmapMatrix.from_dense(dense)
    q, scales = quantize_rows(dense)
    np.testing.assert_array_equal(w.scales, scales)
    assert w.scales[3] == 0
    np.testing.assert_array_equal(w.data, q[dense != 0])
    np.testing.assert_array_equal(w.to_dense(), q.astype(np.float32) * scales[:, None])
    assert w.nnz == np.count_nonzero(dense)


def test_kept_weights_that_round_to_zero_keep_their_bit():
    dense = np.array([[1.0, 1e-4, 0.0, -0.5]], np.float32)
    w = Int8BitmapMatrix.from_dense(dense)
    assert w.nnz == 3 and list(w.data) == [127, 0, -64]
    assert Int8BitmapMatrix.from_dense(dense, threshold=1e-3).nnz == 2


@pytest.mark.parametrize("batch", [1, 2, 5, 16, 17])
@pytest.mark.parametrize("cols", [1, 65, 300])
def test_linear_matches_the_quantized_reference(isa_with_extensions, batch, cols, rng):
    w = Int8BitmapMatrix.from_dense(random_weight(rng, 23, cols, 0.5))
    x = rng.standard_normal((batch, cols)).astype(np.float32)
    bias = rng.standard_normal(23).astype(np.float32)
    for b in (None, bias):
        expected, magnitude = reference_linear(w, x, b)
        result = linear(x, w, b, num_threads=1)
        assert result.dtype == np.float32 and result.shape == (batch, 23)
        assert np.all(np.abs(result - expected) <= 4e-7 * magnitude + 1e-30), (
            np.abs(result - expected).max())


@pytest.mark.parametrize("batch", [1, 6])
def test_linear_reads_rows_with_a_stride(isa_with_extensions, batch, rng):
    w = Int8BitmapMatrix.from_dense(random_weight(rng, 17, 129, 0.5))
    wide = rng.standard_normal((batch, 301)).astype(np.float32)
    x = wide[:, 5:134]  # contiguous rows, row stride 301: read in place
    np.testing.assert_array_equal(w.linear(x), w.linear(np.ascontiguousarray(x)))
    expected, magnitude = reference_linear(w, x)
    assert np.all(np.abs(w.linear(x) - expected) <= 4e-7 * magnitude + 1e-30)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("batch", [1, 8])
def test_linear_is_close_to_the_float_product(isa_with_extensions, sparsity, batch, rng):
    dense = random_weight(rng, 256, 1024, 1 - sparsity)
    w = Int8BitmapMatrix.from_dense(dense)
    x = rng.standard_normal((batch, 1024)).astype(np.float32)
    exact = x.astype(np.float64) @ dense.astype(np.float64).T
    error = np.linalg.norm(w.linear(x) - exact) / np.linalg.norm(exact)
    assert error < 0.02, error


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_threads_give_identical_results(isa_with_extensions, batch, rng):
    w = Int8BitmapMatrix.from_dense(random_weight(rng, 301, 517, 0.3))
    x = rng.standard_normal((batch, 517)).astype(np.float32)
    np.testing.assert_array_equal(w.linear(x, num_threads=1), w.linear(x, num_threads=2))
    xq = random_xq(rng, batch, 517)
    np.testing.assert_array_equal(w.int_product(xq, num_threads=1),
                                  w.int_product(xq, num_threads=2))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("batch", [1, 4])
def test_non_finite_vector_gives_a_nan_row(isa_with_extensions, bad, batch, rng):
    w = Int8BitmapMatrix.from_dense(random_weight(rng, 9, 70, 0.5))
    x = rng.standard_normal((batch, 70)).astype(np.float32)
    x[0, 5] = bad
    result = linear(x, w, np.ones(9, np.float32))
    assert np.isnan(result[0]).all()
    assert np.isfinite(result[1:]).all()
    expected, _ = reference_linear(w, x[1:], np.ones(9, np.float32))
    np.testing.assert_allclose(result[1:], expected, rtol=1e-5, atol=1e-6)


def test_zero_vector_and_zero_sized_shapes(isa_with_extensions):
    w = Int8BitmapMatrix.from_dense(np.ones((3, 5), np.float32))
    np.testing.assert_array_equal(w.linear(np.zeros((2, 5)), [1, 2, 3]), [[1, 2, 3]] * 2)
    for rows, cols, batch in [(0, 5, 2), (3, 0, 2), (3, 5, 0), (0, 0, 0)]:
        w = Int8BitmapMatrix.from_dense(np.ones((rows, cols), np.float32))
        y = w.linear(np.ones((batch, cols), np.float32), np.full(rows, 2.0))
        np.testing.assert_array_equal(y, np.full((batch, rows), 2.0))
        assert w.int_product(np.ones((batch, cols), np.int8)).shape == (batch, rows)


def test_linear_accepts_leading_dimensions_and_converts_dtypes(rng):
    w = Int8BitmapMatrix.from_dense(random_weight(rng, 6, 10, 0.5))
    x = rng.standard_normal((2, 3, 10))
    result = linear(x, w)
    assert result.shape == (2, 3, 6) and result.dtype == np.float32
    np.testing.assert_array_equal(result.reshape(6, 6), w.linear(x.reshape(6, 10)
                                                                 .astype(np.float32)))
    np.testing.assert_array_equal(w.linear(x[0, 0]), w.linear(x[0, :1])[0])
    np.testing.assert_array_equal(w.linear(x[:, :, ::-1].copy()[:, :, ::-1]), result)


def test_format_properties_pickle_and_arrays_round_trip(rng):
    dense = random_weight(rng, 40, 100, 0.3)
    w = Int8BitmapMatrix.from_dense(dense)
    assert w.shape == (40, 100) and w.ndim == 2 and w.nnz == np.count_nonzero(dense)
    assert w.sparsity == pytest.approx(1 - w.nnz / 4000)
    assert w.storage_bytes == w.nnz + 40 * 2 * 8 + 41 * 8 + 40 * 4 + 40 * 4  # + scales, row sums
    assert w.bytes_per_weight == w.storage_bytes / 4000
    assert w.bits.shape == (40, 2) and w.offsets[-1] == w.nnz and w.scales.dtype == np.float32
    with pytest.raises(ValueError):
        w.data[0] = 1  # read-only views
    for copy in (pickle.loads(pickle.dumps(w)), w.copy(),
                 Int8BitmapMatrix((w.data, w.bits, w.scales), shape=w.shape)):
        np.testing.assert_array_equal(copy.to_dense(), w.to_dense())
        np.testing.assert_array_equal(copy.data, w.data)
    assert "Int8BitmapMatrix 40x100" in repr(w)


def test_bad_arrays_are_rejected():
    w = Int8BitmapMatrix.from_dense(np.eye(4, 70, dtype=np.float32))
    data, bits, scales = w.data, w.bits, w.scales
    with pytest.raises(ValueError, match="one value per set bit"):
        Int8BitmapMatrix((data[:-1], bits, scales), shape=(4, 70))
    with pytest.raises(ValueError, match="bits must have shape"):
        Int8BitmapMatrix((data, bits[:3], scales), shape=(4, 70))
    past = bits.copy()
    past[0, 1] |= np.uint64(1) << np.uint64(10)  # column 74 of a 70-column row
    with pytest.raises(ValueError, match="past the last column"):
        Int8BitmapMatrix((np.append(data, np.int8(1)), past, scales), shape=(4, 70))
    with pytest.raises(ValueError, match="scales must have one entry per row"):
        Int8BitmapMatrix((data, bits, scales[:3]), shape=(4, 70))
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="scales must be finite and >= 0"):
            Int8BitmapMatrix((data, bits, np.full(4, bad, np.float32)), shape=(4, 70))
    with pytest.raises(ValueError, match="-128"):
        Int8BitmapMatrix((np.full(4, -128, np.int8), bits, scales), shape=(4, 70))
    with pytest.raises(TypeError, match="data must have dtype int8"):
        Int8BitmapMatrix((data.astype(np.int16), bits, scales), shape=(4, 70))
    with pytest.raises(TypeError, match="scales must be floating point"):
        Int8BitmapMatrix((data, bits, np.ones(4, np.int32)), shape=(4, 70))
    with pytest.raises(ValueError, match="shape is required"):
        Int8BitmapMatrix((data, bits, scales))
    with pytest.raises(TypeError):
        Int8BitmapMatrix(np.eye(3))


def test_bad_dense_input_is_rejected():
    with pytest.raises(ValueError, match="finite"):
        Int8BitmapMatrix.from_dense(np.array([[1.0, np.nan]], np.float32))
    with pytest.raises(ValueError, match="finite"):
        Int8BitmapMatrix.from_dense(np.array([[np.inf]], np.float32))
    with pytest.raises(ValueError, match="2-dimensional"):
        Int8BitmapMatrix.from_dense(np.ones(3))
    with pytest.raises(ValueError, match="threshold"):
        Int8BitmapMatrix.from_dense(np.ones((2, 2)), threshold=-1)
    with pytest.raises(TypeError, match="real array"):
        Int8BitmapMatrix.from_dense(np.ones((2, 2), np.complex64))
    # The int32 bound: cols * 127 * 127 must stay below 2**31.
    assert MAX_INT8_COLS == 133144
    wide = np.zeros((1, MAX_INT8_COLS + 1), np.float32)
    with pytest.raises(ValueError, match="at most 133144 columns"):
        Int8BitmapMatrix.from_dense(wide)
    assert Int8BitmapMatrix.from_dense(wide[:, 1:]).shape == (1, MAX_INT8_COLS)
    with pytest.raises(ValueError, match="at most 133144 columns"):
        Int8BitmapMatrix((np.zeros(0, np.int8), np.zeros((1, 2081), np.uint64),
                          np.ones(1, np.float32)), shape=(1, MAX_INT8_COLS + 1))


def test_bad_product_arguments_are_rejected(rng):
    w = Int8BitmapMatrix.from_dense(random_weight(rng, 4, 10, 0.5))
    with pytest.raises(ValueError, match="shape mismatch"):
        w.linear(np.ones((2, 9), np.float32))
    with pytest.raises(ValueError, match="bias must have shape"):
        w.linear(np.ones((2, 10), np.float32), np.ones(3))
    with pytest.raises(TypeError, match="real array"):
        w.linear(np.ones((2, 10), np.complex64))
    with pytest.raises(ValueError, match="at least one dimension"):
        w.linear(np.float32(1))
    with pytest.raises(TypeError, match="xq must have dtype int8"):
        w.int_product(np.ones((2, 10), np.int16))
    with pytest.raises(ValueError, match="2-dimensional"):
        w.int_product(np.ones(10, np.int8))
    with pytest.raises(ValueError, match="shape mismatch"):
        w.int_product(np.ones((2, 9), np.int8))
    with pytest.raises(ValueError, match="-128"):
        w.int_product(np.full((2, 10), -128, np.int8))
    # The core's own checks, below the Python layer.
    with pytest.raises(TypeError, match="x must have dtype float32"):
        _core.int8_bitmap_linear(w._handle, np.ones((2, 10)), np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="x must have contiguous rows"):
        _core.int8_bitmap_linear(w._handle, np.ones((2, 20), np.float32)[:, ::2],
                                 np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        _core.int8_bitmap_linear(w._handle, np.ones((2, 10), np.float32),
                                 np.empty((2, 5), np.float32))
    with pytest.raises(TypeError, match="out must have dtype int32"):
        _core.int8_bitmap_int_product(w._handle, np.ones((2, 10), np.int8),
                                      np.empty((2, 4), np.int64))


def test_catalogue_lists_the_family():
    assert "int8_bitmap" in sparsegemm.kernel_catalogue()["families"]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(0, 20),
    cols=st.integers(0, 200),
    batch=st.integers(1, 18),
    density=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_int_product_matches_numpy(rows, cols, batch, density, seed):
    rng = np.random.default_rng(seed)
    w = Int8BitmapMatrix.from_dense(random_weight(rng, rows, cols, density))
    xq = random_xq(rng, batch, cols)
    np.testing.assert_array_equal(w.int_product(xq), reference_int(w, xq))
    x = rng.standard_normal((batch, cols)).astype(np.float32)
    expected, magnitude = reference_linear(w, x)
    assert np.all(np.abs(linear(x, w) - expected) <= 4e-7 * magnitude + 1e-30)


def test_amx_switch_follows_the_cpu():
    core = _core
    assert not core.use_amx() or (core.amx_supported() and core.use_avx512_extensions())
    if not core.amx_supported():
        with pytest.raises(ValueError, match="AMX"):
            core.set_use_amx(True)
        return
    assert_switch_round_trips(core.use_amx, core.set_use_amx)




@pytest.mark.parametrize("batch", [1, 16])
def test_concurrent_first_calls_build_one_plan(batch, rng):
    # Threads racing on a fresh matrix's first product (the GIL is released): one builds
    # the plan (batch 1: the index plan; batch 16: the quad plan), the others wait for it,
    # and every result is exact.
    from concurrent.futures import ThreadPoolExecutor

    w = Int8BitmapMatrix.from_dense(random_weight(rng, 300, 2113, 0.08))
    inputs = [random_xq(rng, batch, 2113) for _ in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda xq: w.int_product(xq, num_threads=2), inputs))
    for xq, result in zip(inputs, results):
        np.testing.assert_array_equal(result, reference_int(w, xq))


def _values_rounding_apart(sx: np.float32, count: int) -> np.ndarray:
    """Floats v near (k + 1/2) * sx where rint(v * (1 / sx)) and rint(v / sx) differ."""
    inverse = np.float32(1) / sx
    found = []
    for k in range(126):
        v = np.float32((k + 0.5) * float(sx))
        for _ in range(8):
            if np.rint(v * inverse) != np.rint(v / sx):
                found.append(v)
                break
            v = np.nextafter(v, np.float32(np.inf))
        if len(found) == count:
            break
    return np.array(found, np.float32)


@pytest.mark.parametrize("batch", [1, 3, 16, 40])
def test_activations_quantize_by_the_reciprocal_of_their_scale(isa_with_extensions, batch, rng):
    # With W = I every output is 127 * xq[v, r] * (1/127) * sx[v], so y / sx recovers xq.
    cols = 512
    x = rng.uniform(-2.718, 2.718, (batch, cols)).astype(np.float32)
    x[:, 0] = np.float32(2.718)  # the same sx in every row, one with 25 such values
    ties = _values_rounding_apart(np.float32(2.718) / np.float32(127), 16)
    assert len(ties) == 16
    x[:, 1:17] = ties  # where division would round the other way
    x[0] *= np.float32(3e-38)  # its scale's reciprocal overflows: divided instead
    expected, sx = quantize_rows(x, reciprocal=True)
    by_division, _ = quantize_rows(x, reciprocal=False)
    if batch > 1:
        assert np.count_nonzero(by_division[1:] != expected[1:]) >= 16
    w = Int8BitmapMatrix.from_dense(np.eye(cols, dtype=np.float32))
    y = w.linear(x)
    recovered = np.rint(y.astype(np.float64) / sx.astype(np.float64)[:, None])
    np.testing.assert_array_equal(recovered, expected)
