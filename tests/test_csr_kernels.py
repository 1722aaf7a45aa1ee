"""CSR kernels on every ISA this CPU supports, against a float64 reference.

``sparse_mm`` reaches ``_core.csr_matmul`` and ``linear`` reaches
``_core.csr_linear``. Each takes the few-vector kernel for up to
``kernel_catalogue()["limits"]["gather_max_vectors"]`` dense vectors and the
panel kernel for more, so the vector counts below cover both paths and
straddle every SIMD tile (1, 4, 8 and 16 lanes; 4-vector panels, and the
8-vector panels a short operand (41 rows here) gets: up to 128 columns).
"""

from __future__ import annotations

import numpy as np
import pytest

import sparsegemm
from sparsegemm import CSRMatrix, _core, linear, sparse_mm

GATHER_MAX_VECTORS = sparsegemm.kernel_catalogue()["limits"]["gather_max_vectors"]
VECTOR_COUNTS = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129]
DTYPES = [np.float32, np.float64]
# (M, K): ones, odd sizes, and rows longer than any SIMD tile.
SHAPES = [(1, 1), (1, 37), (37, 1), (13, 29), (7, 100)]
PATTERNS = ["uniform", "empty_rows", "skewed"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", VECTOR_COUNTS)
def test_sparse_mm_vector_counts(isa, dtype, n, random_sparse, rng, check_sparse_mm):
    dense = random_sparse((23, 41), 0.4, dtype)
    a = CSRMatrix.from_dense(dense)
    b = rng.uniform(-1, 1, (41, n)).astype(dtype)
    check_sparse_mm(sparse_mm(a, b, num_threads=1), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row_stride", [128, 144, 256])
def test_sparse_mm_row_stride_in_lines(isa, dtype, row_stride, random_sparse, rng,
                                       check_sparse_mm):
    # b's rows an even (128, 256) or odd (144 floats = 9 lines) number of cache
    # lines apart, read in place or packed; linear packs x^T with an odd number of
    # lines per row (product_driver.h conflict_free_stride) whatever the batch.
    a = CSRMatrix.from_dense(random_sparse((37, 300), 0.5, dtype))
    wide = rng.uniform(-1, 1, (300, row_stride)).astype(dtype)
    for n in (64, 100, row_stride):
        b = wide[:, :n]
        check_sparse_mm(sparse_mm(a, b, num_threads=2), a, b)
    x = np.ascontiguousarray(wide.T)
    check_sparse_mm(linear(x, a, num_threads=2).T, a, wide)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", VECTOR_COUNTS + [600])
@pytest.mark.parametrize("density", [0.1, 0.4])
def test_linear_batch_sizes(isa, dtype, batch, density, random_sparse, rng, check_linear):
    # Density 0.1 (and 600 rows) takes the packed-panel path of linear, 0.4 the
    # strided one (drivers/csr_driver.cpp prefer_packed_panels).
    weight = CSRMatrix.from_dense(random_sparse((23, 41), density, dtype))
    x = rng.uniform(-1, 1, (batch, 41)).astype(dtype)
    bias = rng.uniform(-1, 1, 23).astype(dtype)
    check_linear(linear(x, weight, num_threads=1), x, weight)
    check_linear(linear(x, weight, bias, num_threads=1), x, weight, bias)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [33, 700, 1001])
@pytest.mark.parametrize("density", [0.1, 0.4])
def test_linear_packed_panels_in_parts(isa, dtype, batch, density, random_sparse, rng,
                                       check_linear):
    # The packed driver (drivers/product_driver.h linear_fused_panels) splits
    # the work into panels of x times ranges of w's rows, and each range into
    # tiles of 256 rows: 700 rows make a short last tile, 2 panels (batch 33)
    # with 3-5 threads split the rows as well, and the last panel is partial.
    weight = CSRMatrix.from_dense(random_sparse((700, 900), density, dtype))
    x = rng.uniform(-1, 1, (batch, 900)).astype(dtype)
    bias = rng.uniform(-1, 1, 700).astype(dtype)
    serial = linear(x, weight, bias, num_threads=1)
    check_linear(serial, x, weight, bias)
    for threads in (2, 3, 5):
        # Each output is computed by one thread in a fixed order: bitwise equal.
        np.testing.assert_array_equal(linear(x, weight, bias, num_threads=threads), serial)
    np.testing.assert_array_equal(linear(x, weight, bias, num_threads=3, activation="relu"),
                                  np.maximum(serial, 0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_features", [4100, 8200])
@pytest.mark.parametrize("batch", [2, 17, 40, 129])
def test_linear_with_narrower_packed_panels(isa, dtype, in_features, batch, random_sparse, rng,
                                            check_linear):
    # linear packs x^T in panels as wide as fit the L2 budget (csr_kernels.inl
    # panel_vectors): 4 vectors up to 4096 columns of the weight (AVX2 floats),
    # then 2, then 1; the last panel is zero-padded.
    weight = CSRMatrix.from_dense(random_sparse((9, in_features), 0.02, dtype))
    x = rng.uniform(-1, 1, (batch, in_features)).astype(dtype)
    bias = rng.uniform(-1, 1, 9).astype(dtype)
    check_linear(linear(x, weight, bias, num_threads=2), x, weight, bias)


def _chunk_budget_bytes():
    """The packed panel kernel's column-chunk budget: the L1 data cache, at least 32 KiB
    (csr_kernels.inl chunk_cache_bytes)."""
    return max(32 * 1024, _core.cache_sizes()["l1d"])


def _portable_panel_fits_a_chunk(in_features, dtype):
    """Whether the portable path's panel (four one-lane vectors per row of x^T) fits the
    column-chunk budget, so it runs unchunked."""
    return in_features * 4 * np.dtype(dtype).itemsize <= _chunk_budget_bytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_features", [401, 2100, 4100])
@pytest.mark.parametrize("batch", [2, 16, 17, 33, 512, 545])
def test_linear_in_column_chunks(isa, dtype, in_features, batch, random_sparse, rng, check_linear):
    # At 16+ panels and density >= 0.25 the packed kernel runs in column
    # chunks that keep its slice of x^T in L1 (csr_kernels.inl
    # panel_chunk_columns): rows are cut into per-chunk segments, later chunks
    # add to the output. Rows 0-2 are empty, dense and empty in the first chunk.
    # Below a panel's width of rows the panels narrow to the batch (1 or 2
    # vectors) while the chunks keep the widths planned for the widest panel.
    dense = random_sparse((37, in_features), 0.5, dtype)
    dense[0] = 0
    dense[1] = rng.uniform(-1, 1, in_features)
    dense[2, :in_features // 2] = 0
    weight = CSRMatrix.from_dense(dense)
    chunk = weight._handle.panel_chunk_columns
    # Every ISA path chunks these shapes: the portable one (one lane per
    # vector, four per panel) only where a panel's rows pass the chunk budget,
    # the L1 data cache and at least 32 KiB (4100 columns do on 48 KiB).
    assert chunk > 0 or (isa == "scalar" and _portable_panel_fits_a_chunk(in_features, dtype))
    assert chunk < in_features
    x = rng.uniform(-1, 1, (batch, in_features)).astype(dtype)
    bias = rng.uniform(-1, 1, 37).astype(dtype)
    check_linear(linear(x, weight, bias, num_threads=2), x, weight, bias)
    check_linear(linear(x, weight, num_threads=1), x, weight)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avx512_panels_over_384_columns_run_chunked(dtype, random_sparse, rng, check_linear):
    # With 64-byte vectors a 4-vector panel over 384 input columns (MiniLM's
    # hidden size) takes 96 KiB (4 x 16 floats or 4 x 8 doubles per column, 256
    # bytes), three times a 32 KiB L1, and runs in column chunks where row
    # segments average 16 entries or more (csr_kernels.inl
    # kMinChunkSegmentWideVectors); below that, or where L1 holds the panel,
    # it runs unchunked. From 20% density the chunks go by row quads, in
    # slices of 1.5 times the budget (kQuadChunkCacheRatio).
    if "avx512" not in sparsegemm.available_isas():
        pytest.skip("this CPU has no AVX-512")
    rows, cols, panel_row_bytes = 1152, 384, 256
    with sparsegemm.use_isa("avx512"):
        for density in (0.3, 0.15, 0.1, 0.02):
            dense = random_sparse((rows, cols), density, dtype)
            weight = CSRMatrix.from_dense(dense)
            quads = np.count_nonzero(dense) >= 0.2 * rows * cols
            widest = int(_chunk_budget_bytes() * (1.5 if quads else 1)) // panel_row_bytes
            chunks = -(-cols // widest)
            mean_segment = np.count_nonzero(dense) / (rows * chunks)
            chunk = weight._handle.panel_chunk_columns
            if chunks > 1 and mean_segment >= 16:
                assert chunk == -(-cols // chunks), (density, chunk)
                assert weight._handle.chunk_row_quads == quads
            else:
                assert chunk == 0, (density, chunk)
            if _chunk_budget_bytes() == 32 * 1024:  # as on Zen 4: the boundary falls here
                assert (chunk > 0) == (density >= 0.15), (density, chunk)
            x = rng.uniform(-1, 1, (1024, cols)).astype(dtype)
            check_linear(linear(x, weight, num_threads=2), x, weight)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avx512_sparse_narrow_panels_take_wider_chunks(dtype, random_sparse, rng, check_linear):
    # Below 20% density a 4-vector panel over 4096 columns (1 MiB) narrows to 2 vectors
    # (128 bytes a column) to fit half of L2; with 64-byte vectors its chunks then
    # widen past L1 to hold about 48 entries of a row, up to a 128 KiB slice
    # (csr_kernels.inl kSparseChunkSegment, kSparseChunkMaxBytes).
    if "avx512" not in sparsegemm.available_isas():
        pytest.skip("this CPU has no AVX-512")
    if _core.cache_sizes()["l2"] > 1024 * 1024:
        pytest.skip("with more than 1 MiB of L2 the 4-vector panel fits half of it")
    rows, cols, panel_row_bytes = 64, 4096, 128
    with sparsegemm.use_isa("avx512"):
        for density in (0.15, 0.1, 0.05, 0.02):
            dense = random_sparse((rows, cols), density, dtype)
            weight = CSRMatrix.from_dense(dense)
            per_column = np.count_nonzero(dense) / (rows * cols)
            slice_bytes = min(48 / per_column * panel_row_bytes, 128 * 1024)
            widest = int(max(_chunk_budget_bytes(), int(slice_bytes)) // panel_row_bytes)
            chunks = -(-cols // widest)
            chunk = weight._handle.panel_chunk_columns
            assert chunk == -(-cols // chunks), (density, chunk)
            assert chunk * panel_row_bytes > _chunk_budget_bytes() or density >= 0.15
            x = rng.uniform(-1, 1, (64, cols)).astype(dtype)
            check_linear(linear(x, weight, num_threads=2), x, weight)


def _chunk_ordered_linear(pattern, x, values, ordered, layout, bias=None, threads=2):
    out = np.empty((x.shape[0], pattern.shape[0]), dtype=x.dtype)
    _core.csr_linear_chunk_ordered(pattern._handle, x, out, bias, threads, values, ordered,
                                   layout)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_features", [401, 2100, 4100])
@pytest.mark.parametrize("batch", [5, 17, 64, 545])
def test_linear_over_values_in_chunk_order(isa, dtype, in_features, batch, random_sparse, rng,
                                           check_linear):
    # A caller's values reordered for the chunked kernel (the torch modules' inference
    # path) give the product of the same values in CSR order; rows 0-2 are empty,
    # dense and empty in the first chunk, and a long matrix spans several row blocks.
    dense = random_sparse((300, in_features), 0.5, dtype)
    dense[0] = 0
    dense[1] = rng.uniform(-1, 1, in_features)
    dense[2, :in_features // 2] = 0
    weight = CSRMatrix.from_dense(dense)
    pattern = CSRMatrix.pattern(weight.indptr, weight.indices, weight.shape, dtype)
    values = np.array(weight.data)
    layout, ordered = pattern._handle.values_in_chunk_order(values)
    if layout == 0:  # the portable path, where a panel's rows fit the chunk budget
        assert ordered is None and isa == "scalar" and _portable_panel_fits_a_chunk(in_features,
                                                                                    dtype)
        return
    # The layout names the chunk width and whether chunk order goes by row quads.
    assert layout == 2 * weight._handle.panel_chunk_columns + weight._handle.chunk_row_quads
    assert weight._handle.chunk_row_quads == (isa == "avx512")
    assert sorted(ordered.tolist()) == sorted(values.tolist())
    assert not np.array_equal(ordered, values)  # several chunks: the order really changed
    x = rng.uniform(-1, 1, (batch, in_features)).astype(dtype)
    bias = rng.uniform(-1, 1, 300).astype(dtype)
    check_linear(_chunk_ordered_linear(pattern, x, values, ordered, layout, bias), x,
                 weight, bias)
    # Ordered for another layout (the same width in the other order, or another width),
    # they are not read: the CSR-order values are.
    for other in (layout ^ 1, layout + 2):
        check_linear(_chunk_ordered_linear(pattern, x, values, ordered[::-1].copy(), other),
                     x, weight)


def _quad_weight(rng, rows, cols, density, dtype):
    """A rows x cols weight that the AVX-512 kernels read by row quads, with every subset
    of a quad's rows storing some columns: rows 4q..4q+3 store column c where bit (q + c)
    % 4 of a random 4-bit draw is set, plus a uniform sprinkle; row 1 is empty and row 6
    full."""
    draws = rng.integers(1, 16, size=(1, cols))
    shifts = np.arange(rows)[:, None] % 4
    stored = ((draws >> shifts) & 1).astype(bool) | (rng.random((rows, cols)) < density / 2)
    dense = np.where(stored, rng.uniform(-1, 1, (rows, cols)), 0).astype(dtype)
    dense[min(1, rows - 1)] = 0
    dense[min(6, rows - 1)] = rng.uniform(-1, 1, cols)
    return dense


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 3, 5, 37, 1030])
def test_row_quads_give_each_row_its_own_sum(dtype, rows, rng, check_linear):
    # Chunk order by row quads (csr_matrix.h ChunkOrder, csr_kernels.inl
    # quads_times_panel_chunked): every row count mod 4, rows split between threads
    # and tiles anywhere (a quad split by them is computed whole, each side storing
    # its rows), so 1, 2 and 3 threads give the same bits; batches that narrow the
    # panel to 1 and 2 vectors.
    if "avx512" not in sparsegemm.available_isas():
        pytest.skip("this CPU has no AVX-512")
    cols = 1000
    dense = _quad_weight(rng, rows, cols, 0.5, dtype)
    weight = CSRMatrix.from_dense(dense)
    bias = rng.uniform(-1, 1, rows).astype(dtype)
    with sparsegemm.use_isa("avx512"):
        assert weight._handle.chunk_row_quads and weight._handle.panel_chunk_columns < cols
        for batch in (9, 20, 64, 200):
            x = rng.uniform(-1, 1, (batch, cols)).astype(dtype)
            results = [linear(x, weight, bias, num_threads=t) for t in (1, 2, 3)]
            check_linear(results[0], x, weight, bias)
            for other in results[1:]:
                np.testing.assert_array_equal(other, results[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_quads_keep_an_infinite_weight_in_its_row(dtype, rng):
    # A quad's rows share each column's load of x but never its weights: an infinite
    # or NaN weight reaches its own row's output only, whichever subset holds it.
    if "avx512" not in sparsegemm.available_isas():
        pytest.skip("this CPU has no AVX-512")
    rows, cols = 64, 900
    dense = _quad_weight(rng, rows, cols, 0.5, dtype)
    dense[:4, 5] = 1.0  # column 5 stored by all four rows of quad 0
    dense[8, 7] = 1.0
    dense[9:12, 7] = 0.0  # column 7 stored by row 8 alone in quad 2
    x = rng.uniform(-1, 1, (64, cols)).astype(dtype)
    with sparsegemm.use_isa("avx512"):
        for row, col, bad in ((2, 5, np.inf), (8, 7, -np.inf), (13, 100, np.nan)):
            poisoned = dense.copy()
            poisoned[row, col] = bad
            weight = CSRMatrix.from_dense(poisoned)
            assert weight._handle.chunk_row_quads
            out = linear(x, weight, num_threads=2)
            assert not np.isfinite(out[:, row]).any(), (row, col)
            others = np.delete(np.arange(rows), row)
            expected = x.astype(np.float64) @ dense[others].T.astype(np.float64)
            np.testing.assert_allclose(out[:, others], expected, rtol=1e-4, atol=1e-4)


def test_row_quads_are_for_avx512_float_and_double(random_sparse):
    # Other ISAs (fewer registers) and bfloat16 values (widened per row segment) keep
    # chunk order by rows; below 20% density, where quads share few loads, so does
    # AVX-512.
    weight = CSRMatrix.from_dense(random_sparse((256, 2048), 0.5, np.float32))
    bf16 = CSRMatrix.from_dense(random_sparse((256, 2048), 0.5, np.float32), dtype="bfloat16")
    sparse = CSRMatrix.from_dense(random_sparse((256, 2048), 0.15, np.float32))
    for isa in sparsegemm.available_isas():
        with sparsegemm.use_isa(isa):
            assert weight._handle.panel_chunk_columns > 0 or isa == "scalar"
            assert weight._handle.chunk_row_quads == (isa == "avx512")
            assert not bf16._handle.chunk_row_quads
            assert not sparse._handle.chunk_row_quads


def test_values_in_chunk_order_rejects_bad_values(random_sparse):
    weight = CSRMatrix.from_dense(random_sparse((64, 600), 0.5, np.float32))
    pattern = CSRMatrix.pattern(weight.indptr, weight.indices, weight.shape, np.float32)
    with pytest.raises(ValueError, match="entries"):
        pattern._handle.values_in_chunk_order(np.ones(weight.nnz + 1, np.float32))
    values = np.array(weight.data)
    x = np.ones((64, 600), np.float32)
    with pytest.raises(ValueError, match="entries"):
        _chunk_ordered_linear(pattern, x, values, values[:-1].copy(), 200)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n", [1, 3, 4, 5, 17])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_shapes_and_patterns(isa, dtype, shape, n, pattern, random_sparse, rng, check_sparse_mm,
                             check_linear):
    a = CSRMatrix.from_dense(random_sparse(shape, 0.5, dtype, pattern))
    b = rng.uniform(-1, 1, (shape[1], n)).astype(dtype)
    check_sparse_mm(sparse_mm(a, b), a, b)
    x = np.ascontiguousarray(b.T)
    check_linear(linear(x, a), x, a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 4, 5, 33])
@pytest.mark.parametrize("density", [0.0, 1.0])
def test_all_zero_and_fully_dense(isa, dtype, n, density, random_sparse, rng, check_sparse_mm):
    a = CSRMatrix.from_dense(random_sparse((19, 35), density, dtype))
    assert a.nnz == round(density * 19 * 35)
    b = rng.uniform(-1, 1, (35, n)).astype(dtype)
    result = sparse_mm(a, b)
    check_sparse_mm(result, a, b)
    if density == 0.0:
        assert not result.any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 6, 40])
@pytest.mark.parametrize("pattern", ["uniform", "skewed"])
def test_threads_and_row_blocks(isa, dtype, n, pattern, random_sparse, rng, check_sparse_mm,
                                check_linear):
    # ~110k stored entries: several 32k-entry row blocks (csr_kernels.inl
    # kRowBlockNnz) per thread, and enough work that the driver splits rows.
    shape = (401, 500)
    a = CSRMatrix.from_dense(random_sparse(shape, 0.55, dtype, pattern))
    assert a.nnz > 3 * (1 << 15) or pattern == "skewed"
    b = rng.uniform(-1, 1, (500, n)).astype(dtype)
    serial = sparse_mm(a, b, num_threads=1)
    check_sparse_mm(serial, a, b)
    for threads in (2, 3):
        # Each row is computed by one thread in a fixed order: bitwise equal.
        np.testing.assert_array_equal(sparse_mm(a, b, num_threads=threads), serial)
    x = np.ascontiguousarray(b.T)
    serial_linear = linear(x, a, num_threads=1)
    check_linear(serial_linear, x, a)
    np.testing.assert_array_equal(linear(x, a, num_threads=2), serial_linear)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_row_holds_almost_everything(isa, dtype, rng, check_sparse_mm):
    dense = np.zeros((64, 5000), dtype)
    dense[10] = rng.uniform(-1, 1, 5000)
    dense[::7, ::97] = 1.5
    a = CSRMatrix.from_dense(dense)
    for n in (1, 4, 9):
        b = rng.uniform(-1, 1, (5000, n)).astype(dtype)
        check_sparse_mm(sparse_mm(a, b, num_threads=2), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k, n", [(0, 5, 3), (5, 0, 3), (5, 3, 0), (0, 0, 0), (0, 5, 9),
                                     (5, 0, 9)])
def test_zero_sized_dimensions(isa, dtype, m, k, n, rng):
    a = CSRMatrix.from_dense(np.ones((m, k), dtype))
    b = rng.uniform(-1, 1, (k, n)).astype(dtype)
    result = sparse_mm(a, b)
    assert result.shape == (m, n) and result.dtype == dtype
    np.testing.assert_array_equal(result, np.zeros((m, n)))
    y = linear(np.ones((n, k), dtype), a)
    assert y.shape == (n, m)
    np.testing.assert_array_equal(y, np.zeros((n, m)))
    y = linear(np.ones((n, k), dtype), a, np.full(m, 2.0, dtype))
    np.testing.assert_array_equal(y, np.full((n, m), 2.0))


def _dense_operand_layouts(b: np.ndarray) -> dict[str, np.ndarray]:
    """Views of the same values in different memory layouts (all equal to b)."""
    k, n = b.shape
    wide = np.zeros((2 * k, 2 * n), b.dtype)
    wide[::2, ::2] = b
    return {
        "c": b,
        "fortran": np.asfortranarray(b),
        "row_and_column_strides": wide[::2, ::2],
        "negative_rows": np.ascontiguousarray(b[::-1])[::-1],
        "negative_columns": np.ascontiguousarray(b[:, ::-1])[:, ::-1],
        "column_slice": np.concatenate([b, b], axis=1)[:, :n],
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 4, 5, 16, 33])
def test_dense_operand_memory_orders(isa, dtype, n, random_sparse, rng, check_sparse_mm,
                                     check_linear):
    a = CSRMatrix.from_dense(random_sparse((21, 30), 0.4, dtype))
    b = rng.uniform(-1, 1, (30, n)).astype(dtype)
    expected = sparse_mm(a, b)
    for name, view in _dense_operand_layouts(b).items():
        np.testing.assert_array_equal(view, b)
        np.testing.assert_array_equal(sparse_mm(a, view), expected, err_msg=name)
        x = view.T
        check_linear(linear(x, a), x, a)
    check_sparse_mm(expected, a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_operand(isa, dtype, random_sparse, rng, check_sparse_mm, check_linear):
    a = CSRMatrix.from_dense(random_sparse((17, 40), 0.3, dtype))
    v = rng.uniform(-1, 1, 80).astype(dtype)
    for vector in (v[:40], v[::2], v[::-2]):
        result = sparse_mm(a, vector)
        assert result.shape == (17,)
        check_sparse_mm(result, a, vector)
        y = linear(vector, a)
        assert y.shape == (17,)
        check_linear(y, vector, a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 8, 20])
def test_out_argument(isa, dtype, n, random_sparse, rng, check_sparse_mm):
    a = CSRMatrix.from_dense(random_sparse((15, 22), 0.5, dtype))
    b = rng.uniform(-1, 1, (22, n)).astype(dtype)
    out = np.full((15, n), np.nan, dtype)
    assert sparse_mm(a, b, out=out) is out
    check_sparse_mm(out, a, b)
    # Rows of out need only be contiguous: a column slice of a wider array works
    # and leaves the other columns alone.
    wide = np.full((15, n + 3), -7.0, dtype)
    sparse_mm(a, b, out=wide[:, :n])
    check_sparse_mm(wide[:, :n], a, b)
    assert (wide[:, n:] == -7.0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_vector_strided(isa, dtype, random_sparse, rng, check_sparse_mm):
    a = CSRMatrix.from_dense(random_sparse((15, 22), 0.5, dtype))
    v = rng.uniform(-1, 1, 22).astype(dtype)
    storage = np.full(30, -7.0, dtype)
    sparse_mm(a, v, out=storage[::2])
    check_sparse_mm(storage[::2], a, v)
    assert (storage[1::2] == -7.0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 4, 5, 40])
def test_core_matmul_bias(isa, dtype, n, random_sparse, rng, check_sparse_mm):
    a = CSRMatrix.from_dense(random_sparse((26, 18), 0.5, dtype, "empty_rows"))
    b = rng.uniform(-1, 1, (18, n)).astype(dtype)
    bias = rng.uniform(-1, 1, 26).astype(dtype)
    out = np.empty((26, n), dtype)
    _core.csr_matmul(a._handle, b, out, bias, 2)
    check_sparse_mm(out, a, b, bias)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_shape", [(), (1,), (6,), (2, 3), (2, 1, 5)])
def test_linear_leading_dimensions(isa, dtype, batch_shape, random_sparse, rng, check_linear):
    weight = CSRMatrix.from_dense(random_sparse((9, 14), 0.5, dtype))
    bias = rng.uniform(-1, 1, 9).astype(dtype)
    x = rng.uniform(-1, 1, batch_shape + (14,)).astype(dtype)
    y = linear(x, weight, bias)
    assert y.shape == batch_shape + (9,)
    check_linear(y, x, weight, bias)
    # Non-contiguous x: a transposed batch and a strided last dimension.
    if len(batch_shape) >= 2:
        xt = np.swapaxes(x, 0, 1)
        check_linear(linear(xt, weight, bias), xt, weight, bias)
    wide = np.repeat(x, 2, axis=-1)[..., ::2]
    check_linear(linear(wide, weight), wide, weight)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 4, 6])
def test_gather_offsets_beyond_32_bits(isa, dtype, n, tmp_path, rng, check_sparse_mm):
    # B's row stride exceeds 2^31 elements, so the 32-bit gather offsets cannot
    # address it and the driver must transpose B first. A sparse file keeps the
    # 16+ GB view cheap: only the pages touched are ever stored.
    row_stride = 2**31 + 64
    path = tmp_path / "huge_b.bin"
    with open(path, "wb") as handle:
        handle.truncate(2 * row_stride * np.dtype(dtype).itemsize)
    storage = np.memmap(path, dtype=dtype, mode="r+", shape=(2, row_stride))
    b = storage[:, :n]
    b[...] = rng.uniform(-1, 1, (2, n))
    a = CSRMatrix.from_dense(np.array([[1.0, 2.0], [0.0, -3.0], [0.5, 0.0]], dtype))
    check_sparse_mm(sparse_mm(a, b), a, np.array(b))
    del b, storage
    path.unlink()  # pytest keeps old temp dirs; don't leave 16 GB (sparse) files behind


def test_isas_agree_with_scalar(random_sparse, rng):
    a = CSRMatrix.from_dense(random_sparse((50, 70), 0.3, np.float64))
    b = rng.uniform(-1, 1, (70, 11))
    with sparsegemm.use_isa("scalar"):
        scalar = sparse_mm(a, b)
    for isa_name in sparsegemm.available_isas():
        with sparsegemm.use_isa(isa_name):
            np.testing.assert_allclose(sparse_mm(a, b), scalar, rtol=1e-12, atol=1e-12)


# --- the ISA override -----------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [("scalar", "scalar"), ("portable", "scalar")])
def test_isa_environment_variable(python_subprocess, value, expected):
    result = python_subprocess(
        "import warnings; warnings.simplefilter('error'); import sparsegemm; "
        "print(sparsegemm.get_isa()); "
        "print(sparsegemm.show_config(print_out=False)['isa_override'])",
        env={"SPARSEGEMM_ISA": value})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [expected, value]


def test_isa_environment_variable_every_level(python_subprocess):
    for level in sparsegemm.available_isas():
        result = python_subprocess("import sparsegemm; print(sparsegemm.get_isa())",
                                   env={"SPARSEGEMM_ISA": level})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == level


def test_bad_isa_environment_variable_warns(python_subprocess):
    result = python_subprocess(
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import sparsegemm\n"
        "print(sparsegemm.get_isa())\n"
        "print([str(w.category.__name__) + ': ' + str(w.message) for w in caught])\n",
        env={"SPARSEGEMM_ISA": "sse9000"})
    assert result.returncode == 0, result.stderr
    isa_line, warnings_line = result.stdout.splitlines()
    assert isa_line == sparsegemm._core.best_isa()
    assert "RuntimeWarning" in warnings_line and "sse9000" in warnings_line


def test_unsupported_isa_environment_variable_warns(python_subprocess):
    missing = [name for name in ("avx2", "avx512") if name not in sparsegemm.available_isas()]
    if not missing:
        pytest.skip("this CPU supports every ISA level")
    result = python_subprocess(
        "import warnings; warnings.simplefilter('always'); import sparsegemm; "
        "print(sparsegemm.get_isa())", env={"SPARSEGEMM_ISA": missing[-1]})
    assert result.stdout.strip() == sparsegemm._core.best_isa()
    assert "not supported by this CPU" in result.stderr


def test_set_isa_rejects_unknown_name():
    before = sparsegemm.get_isa()
    with pytest.raises(ValueError, match="unknown ISA"):
        sparsegemm.set_isa("sse9000")
    with pytest.raises(ValueError):
        sparsegemm._core.set_active_isa("sse9000")
    assert sparsegemm.get_isa() == before


def test_set_isa_rejects_unsupported_level():
    missing = [name for name in ("avx2", "avx512") if name not in sparsegemm.available_isas()]
    if not missing:
        pytest.skip("this CPU supports every ISA level")
    before = sparsegemm.get_isa()
    with pytest.raises(ValueError, match="cannot run"):
        sparsegemm.set_isa(missing[0])
    assert sparsegemm.get_isa() == before


def test_use_isa_restores_on_error():
    before = sparsegemm.get_isa()
    with pytest.raises(RuntimeError), sparsegemm.use_isa("scalar"):
        assert sparsegemm.get_isa() == "scalar"
        raise RuntimeError("boom")
    assert sparsegemm.get_isa() == before


def test_set_isa_none_restores_best():
    with sparsegemm.use_isa("scalar"):
        sparsegemm.set_isa(None)
        assert sparsegemm.get_isa() == sparsegemm._core.best_isa()
    assert sparsegemm.available_isas()[0] == "scalar"
    assert sparsegemm.available_isas()[-1] == sparsegemm._core.best_isa()


@pytest.fixture(params=[True, False], ids=["hardware_gather", "scalar_loads"])
def gather_mode(request):
    """Both batch-1 CSR kernels, whichever one this CPU's default picks."""
    previous = _core.prefer_hardware_gather()
    _core.set_prefer_hardware_gather(request.param)
    yield request.param
    _core.set_prefer_hardware_gather(previous)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(9, 70000)])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_batch_one_kernels(isa, gather_mode, dtype, shape, pattern, random_sparse, rng,
                           check_sparse_mm, check_linear):
    # (9, 70000): 32-bit column indices; the others store 16-bit ones.
    density = 0.002 if shape[1] > 1000 else 0.4
    a = CSRMatrix.from_dense(random_sparse(shape, density, dtype, pattern=pattern))
    x = rng.uniform(-1, 1, (1, shape[1])).astype(dtype)
    check_linear(linear(x, a, num_threads=2), x, a)
    strided = rng.uniform(-1, 1, (shape[1], 3)).astype(dtype)[:, 1:2]  # x(k) at stride 3
    check_sparse_mm(sparse_mm(a, strided, num_threads=2), a, strided)
