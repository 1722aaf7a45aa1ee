"""Bitmap kernels on every ISA this CPU supports, against a float64 reference.

``linear`` and ``sparse_mm`` reach ``_core.bitmap_linear`` / ``bitmap_matmul``,
which run the batch-1 kernel (gemv_rows) for one vector, the small-batch
kernel (a tile of 2 or 4 rows x 256 columns expanded once, 16 vectors per
pass, 4 at a time) for several finite vectors, and the batch-1 kernel per
vector when a vector holds Inf/NaN. Column counts straddle the SIMD chunk
(1, 4, 8, 16 lanes), the 64-bit word and the 256-column tile; vector counts
straddle 4 and 16. The AVX-512 level is skipped where the CPU lacks it (the
``isa`` fixture only yields levels this CPU runs).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsegemm import BitmapMatrix, _core, _runtime, linear, sparse_mm

DTYPES = [np.float32, np.float64]
COLS = [1, 7, 8, 9, 15, 16, 17, 33, 63, 64, 65, 255, 256, 257, 300]
BATCHES = [1, 2, 3, 4, 5, 8, 15, 16, 17, 33]
PATTERNS = ["uniform", "empty_rows", "skewed"]


def reference_operand(a: BitmapMatrix) -> sp.csr_array:
    """The stored entries only (so 0 * inf never arises from an unstored one)."""
    return a.to_scipy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", COLS)
@pytest.mark.parametrize("batch", [1, 3, 17])
def test_linear_columns(isa, dtype, cols, batch, random_sparse, rng, check_linear):
    # 13 rows: groups of 4 (batch 1) and 2 or 4 (small batch) plus a remainder.
    a = BitmapMatrix.from_dense(random_sparse((13, cols), 0.5, dtype))
    x = rng.uniform(-1, 1, (batch, cols)).astype(dtype)
    bias = rng.uniform(-1, 1, 13).astype(dtype)
    check_linear(linear(x, a, num_threads=1), x, reference_operand(a))
    check_linear(linear(x, a, bias, num_threads=1), x, reference_operand(a), bias)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 0.7, 1.0])
def test_linear_batches_and_densities(isa, dtype, batch, density, random_sparse, rng, check_linear):
    a = BitmapMatrix.from_dense(random_sparse((23, 130), density, dtype))
    assert a.nnz == round(a.nnz)  # (all-zero: nnz 0, fully dense: every bit)
    x = rng.uniform(-1, 1, (batch, 130)).astype(dtype)
    result = linear(x, a, num_threads=1)
    check_linear(result, x, reference_operand(a))
    if density == 0.0:
        assert a.nnz == 0 and not result.any()
    if density == 1.0:
        assert a.nnz == 23 * 130


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (37, 1), (13, 29), (7, 100), (5, 513)])
@pytest.mark.parametrize("n", [1, 2, 4, 5, 16, 17])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_shapes_and_patterns(isa, dtype, shape, n, pattern, random_sparse, rng, check_sparse_mm,
                             check_linear):
    a = BitmapMatrix.from_dense(random_sparse(shape, 0.5, dtype, pattern))
    b = rng.uniform(-1, 1, (shape[1], n)).astype(dtype)
    check_sparse_mm(sparse_mm(a, b), reference_operand(a), b)
    x = np.ascontiguousarray(b.T)
    check_linear(linear(x, a), x, reference_operand(a))


def _layouts(b: np.ndarray) -> dict[str, np.ndarray]:
    k, n = b.shape
    wide = np.zeros((2 * k, 2 * n), b.dtype)
    wide[::2, ::2] = b
    return {
        "c": b,
        "fortran": np.asfortranarray(b),
        "strided": wide[::2, ::2],
        "negative_rows": np.ascontiguousarray(b[::-1])[::-1],
        "column_slice": np.concatenate([b, b], axis=1)[:, :n],
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 5, 16, 33])
def test_dense_operand_memory_orders(isa, dtype, n, random_sparse, rng, check_sparse_mm,
                                     check_linear):
    a = BitmapMatrix.from_dense(random_sparse((21, 70), 0.4, dtype))
    b = rng.uniform(-1, 1, (70, n)).astype(dtype)
    expected = sparse_mm(a, b)
    check_sparse_mm(expected, reference_operand(a), b)
    for name, view in _layouts(b).items():
        np.testing.assert_array_equal(sparse_mm(a, view), expected, err_msg=name)
        x = view.T
        check_linear(linear(x, a), x, reference_operand(a))
    v = rng.uniform(-1, 1, 140).astype(dtype)
    for vector in (v[:70], v[::2]):
        check_sparse_mm(sparse_mm(a, vector), reference_operand(a), vector)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 6, 40])
@pytest.mark.parametrize("pattern", ["uniform", "skewed"])
# The batch-1 kernel walks these rows four at a time at 0.55, one at a time
# below 0.4 (short rows), and prefetches per word below 0.25.
@pytest.mark.parametrize("density", [0.55, 0.3, 0.15])
def test_threads(isa, dtype, n, pattern, density, random_sparse, rng, check_linear):
    a = BitmapMatrix.from_dense(random_sparse((401, 500), density, dtype, pattern))
    x = rng.uniform(-1, 1, (n, 500)).astype(dtype)
    serial = linear(x, a, num_threads=1)
    check_linear(serial, x, reference_operand(a))
    for threads in (2, 3):
        # Each row is computed by one thread in a fixed order: bitwise equal.
        np.testing.assert_array_equal(linear(x, a, num_threads=threads), serial)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 2, 7])
# With 6401 columns x takes over 24 KB, so the batch-1 kernel walks rows four at a time.
@pytest.mark.parametrize("cols", [70, 6401])
def test_unstored_entries_never_multiply_inf(isa, dtype, batch, cols, rng, check_linear):
    # Every kernel must give the CSR answer: Inf/NaN in x at unstored columns vanish.
    W = np.zeros((9, cols), dtype)
    W[:, ::3] = rng.uniform(-1, 1, (9, len(range(0, cols, 3))))
    a = BitmapMatrix.from_dense(W)
    x = rng.uniform(-1, 1, (batch, cols)).astype(dtype)
    x[:, 1] = np.inf
    x[0, 2] = np.nan
    last_unstored = cols - 1 if (cols - 1) % 3 else cols - 2  # in the partial last word
    x[:, last_unstored] = -np.inf
    result = linear(x, a)
    assert np.isfinite(result).all()
    check_linear(result, x, reference_operand(a))
    x[-1, 3] = np.inf  # a stored column: Inf propagates
    result = linear(x, a)
    check_linear(result, x, reference_operand(a))
    assert np.isinf(result[-1]).any()


_GUARD_PAGE_SCRIPT = """
import ctypes, mmap, sys
import numpy as np
import sparsegemm
from sparsegemm import BitmapMatrix, _core

isa, dtype, batch = sys.argv[1], np.dtype(sys.argv[2]), int(sys.argv[3])
sparsegemm.set_isa(isa)
rng = np.random.default_rng(0)
W = np.where(rng.random((10, 200)) < 0.6, rng.uniform(-1, 1, (10, 200)), 0).astype(dtype)
W[-1] = rng.uniform(-1, 1, 200)  # the last row is full
a = BitmapMatrix.from_dense(W)
# The values end exactly where an unreadable page starts: any read past them faults.
page = mmap.PAGESIZE
nbytes = a.nnz * dtype.itemsize
readable = -(-nbytes // page) * page
region = mmap.mmap(-1, readable + page)
base = ctypes.addressof(ctypes.c_char.from_buffer(region))
libc = ctypes.CDLL(None)
assert libc.mprotect(ctypes.c_void_p(base + readable), page, 0) == 0  # PROT_NONE
values = np.frombuffer(region, dtype=dtype, count=a.nnz, offset=readable - nbytes)
values[:] = a.data * 2
x = rng.uniform(-1, 1, (batch, 200)).astype(dtype)
out = np.empty((batch, 10), dtype)
_core.bitmap_linear(a._handle, x, out, None, 1, values)
tol = 1e-4 if dtype == np.float32 else 1e-12
np.testing.assert_allclose(out, x @ (2 * W.astype(np.float64)).T, rtol=tol, atol=tol)
print("ok")
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 4, 16])
def test_replacement_values_are_not_read_past_their_end(isa, dtype, batch, python_subprocess):
    # Caller-owned values (as the torch op passes) have no padding: the kernels
    # must not read past the last one (the last rows take the masked path).
    argv = f"import sys; sys.argv = ['-', {isa!r}, {dtype!r}, '{batch}']\n"
    result = python_subprocess(argv + _GUARD_PAGE_SCRIPT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, k, n", [(0, 5, 3), (5, 0, 3), (5, 3, 0), (0, 0, 0), (5, 0, 17)])
def test_zero_sized_dimensions(isa, dtype, m, k, n, rng):
    a = BitmapMatrix.from_dense(np.ones((m, k), dtype))
    b = rng.uniform(-1, 1, (k, n)).astype(dtype)
    result = sparse_mm(a, b)
    assert result.shape == (m, n) and result.dtype == dtype
    np.testing.assert_array_equal(result, np.zeros((m, n)))
    y = linear(np.ones((n, k), dtype), a, np.full(m, 2.0, dtype))
    np.testing.assert_array_equal(y, np.full((n, m), 2.0))


def test_bad_input_is_rejected_before_any_kernel():
    a = BitmapMatrix.from_dense(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="shape mismatch"):
        linear(np.ones((2, 5), np.float32), a)
    with pytest.raises(ValueError, match="shape mismatch"):
        sparse_mm(a, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match="bias"):
        linear(np.ones((2, 4), np.float32), a, np.ones(3))
    out = np.empty((4, 2), np.float32)
    with pytest.raises(ValueError, match="out"):
        sparse_mm(a, np.ones((4, 3), np.float32), out=out)
    with pytest.raises(ValueError, match="values must have 4 entries"):
        _core.bitmap_linear(a._handle, np.ones((1, 4), np.float32), np.empty((1, 4), np.float32),
                            None, 1, np.ones(3, np.float32))


@settings(max_examples=60)
@given(
    rows=st.integers(0, 20),
    cols=st.integers(0, 140),
    batch=st.integers(1, 20),
    density=st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_matches_numpy(rows, cols, batch, density, dtype, seed, check_linear):
    rng = np.random.default_rng(seed)
    W = np.where(rng.random((rows, cols)) < density, rng.uniform(-1, 1, (rows, cols)), 0)
    a = BitmapMatrix.from_dense(W.astype(dtype))
    np.testing.assert_array_equal(a.to_dense(), W.astype(dtype))
    x = rng.uniform(-1, 1, (batch, cols)).astype(dtype)
    check_linear(linear(x, a), x, reference_operand(a))


def _kernel_choice_set_to(read, write, value):
    """Yields with the core's kernel choice (read / write) set to value, then restores it."""
    previous = read()
    write(value)
    try:
        yield value
    finally:
        write(previous)


@pytest.fixture(params=["near", "far", "off"])
def bitmap_prefetch(request):
    """Every prefetch mode of the batch-1 kernel (core/isa.h), each with its own row grouping."""
    yield from _kernel_choice_set_to(_core.bitmap_prefetch, _core.set_bitmap_prefetch,
                                     request.param)


@pytest.fixture(params=["expand", "compress"])
def bitmap_walk(request):
    """Both walks of the AVX-512 batch-1 kernel (core/isa.h; other levels ignore it)."""
    yield from _kernel_choice_set_to(_core.bitmap_walk, _core.set_bitmap_walk, request.param)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(13, 300), (9, 2100), (5, 1100), (6, 7000)])
@pytest.mark.parametrize("density", [0.1, 0.3, 0.6, 1.0])
def test_batch1_kernel_in_every_prefetch_mode(isa, bitmap_prefetch, bitmap_walk, dtype, shape,
                                              density, random_sparse, rng, check_linear):
    a = BitmapMatrix.from_dense(random_sparse(shape, density, dtype))
    x = rng.uniform(-1, 1, (1, shape[1])).astype(dtype)
    check_linear(linear(x, a, num_threads=2), x, reference_operand(a), None)


@pytest.mark.parametrize("dtype", DTYPES)
# 2100 columns: one row at a time in four segments (far prefetches); 7000: four rows at a
# time (x over 24 KB); 300: one row at a time, in one stream. Batch 2: with far prefetches
# and the compress walk, the segments of 2100 and 7000 columns serve both vectors.
@pytest.mark.parametrize("cols", [300, 2100, 7000])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_an_infinite_weight_reaches_its_own_row_only(isa, bitmap_prefetch, bitmap_walk, dtype,
                                                     cols, batch, bad, random_sparse, rng):
    # The compress walk reads the 16 (8) values after a chunk's own and meets them with
    # zeros: an infinite one there makes a NaN, which must not reach the row's sum, nor the
    # row before, whose last read runs into this row's first values.
    W = random_sparse((12, cols), 0.4, dtype)
    stored = [np.flatnonzero(row) for row in W]
    # A row's first value, one at a quarter of the row (where a segment starts) and a
    # row's last value.
    chosen = {3: stored[3][0], 6: stored[6][len(stored[6]) // 4], 9: stored[9][-1]}
    for row, col in chosen.items():
        W[row, col] = bad
    a = BitmapMatrix.from_dense(W)
    # No cancellation: the sums' signs are known.
    x = rng.uniform(0.5, 1, (batch, cols)).astype(dtype)
    result = linear(x, a, num_threads=2)
    expected = x.astype(np.float64) @ W.T.astype(np.float64)
    bad_rows = sorted(chosen)
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(result), np.isinf(expected))
    non_finite = np.isnan if np.isnan(bad) else np.isinf
    assert non_finite(expected[:, bad_rows]).all()
    good = np.setdiff1d(np.arange(12), bad_rows)
    rtol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(result[:, good], expected[:, good], rtol=rtol)
    if not np.isnan(bad):
        assert (np.sign(result[:, bad_rows]) == np.sign(bad)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(9, 1024), (7, 2100), (6, 7000)])
@pytest.mark.parametrize("density", [0.05, 0.3, 0.6, 0.7])
@pytest.mark.parametrize("batch", [2, 3, 4, 5])
def test_a_few_vectors_in_every_walk(isa, bitmap_prefetch, bitmap_walk, dtype, shape, density,
                                     batch, random_sparse, rng, check_linear):
    # Batch 2 with far prefetches and the compress walk: each row's values read once for
    # both vectors (gemv_row_split_vectors), up to density 0.6; elsewhere the tile kernel.
    a = BitmapMatrix.from_dense(random_sparse(shape, density, dtype))
    x = rng.uniform(-1, 1, (batch, shape[1])).astype(dtype)
    bias = rng.uniform(-1, 1, shape[0]).astype(dtype)
    check_linear(linear(x, a, bias, num_threads=2), x, reference_operand(a), bias)
    # Each vector's result does not depend on the thread split.
    np.testing.assert_array_equal(linear(x, a, bias, num_threads=1),
                                  linear(x, a, bias, num_threads=2))


@pytest.mark.parametrize("variable", ["SPARSEGEMM_BITMAP_PREFETCH", "SPARSEGEMM_BITMAP_WALK",
                                      "SPARSEGEMM_GATHER",
                                      "SPARSEGEMM_AVX512_EXTENSIONS", "SPARSEGEMM_AMX"])
def test_an_unknown_kernel_choice_in_the_environment_warns(python_subprocess, variable):
    code = ("import warnings\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    import sparsegemm\n"
            "print(sparsegemm._core.bitmap_prefetch())\n"
            "print([w.category.__name__ + ': ' + str(w.message) for w in caught])\n")
    default = subprocess_output(python_subprocess, code, {})[0]
    prefetch, caught = subprocess_output(python_subprocess, code, {variable: "l3"})
    assert f"RuntimeWarning: {variable}='l3' is not one of" in caught
    assert prefetch == default  # the vendor's default stands
    valid = _runtime.KERNEL_CHOICE_VARIABLES[variable][1]
    assert "Warning" not in subprocess_output(python_subprocess, code, {variable: valid})[1]


# What each kernel choice variable sets, read back from the C++ core.
KERNEL_CHOICE_READERS = {
    "SPARSEGEMM_GATHER": "prefer_hardware_gather",
    "SPARSEGEMM_BITMAP_WALK": "bitmap_walk",
    "SPARSEGEMM_BITMAP_PREFETCH": "bitmap_prefetch",
    "SPARSEGEMM_AVX512_EXTENSIONS": "use_avx512_extensions",
    "SPARSEGEMM_AMX": "use_amx",
    "SPARSEGEMM_INT8_INDEXED": "use_int8_indexed_walk",
    "SPARSEGEMM_HUGE_PAGES": "huge_pages_enabled",
}


def expected_kernel_choice(variable: str, value: str):
    if variable == "SPARSEGEMM_GATHER":
        return value == "hardware"
    if variable in ("SPARSEGEMM_BITMAP_PREFETCH", "SPARSEGEMM_BITMAP_WALK"):
        return value
    turned_on = value in ("on", "1")
    if variable in ("SPARSEGEMM_INT8_INDEXED", "SPARSEGEMM_HUGE_PAGES"):
        return turned_on
    if variable == "SPARSEGEMM_AVX512_EXTENSIONS":
        return turned_on and _core.avx512_extensions_supported()
    return turned_on and _core.amx_supported()


def test_the_kernel_choice_table_is_the_one_the_core_reads():
    # One table in the C++ core serves its parsing and the Python warning.
    assert _runtime.KERNEL_CHOICE_VARIABLES == _core.kernel_choice_variables()
    assert set(_runtime.KERNEL_CHOICE_VARIABLES) == set(KERNEL_CHOICE_READERS)


@pytest.mark.parametrize("variable, value", [
    (variable, value) for variable, values in _runtime.KERNEL_CHOICE_VARIABLES.items()
    for value in values])
def test_every_accepted_kernel_choice_takes_effect(python_subprocess, variable, value):
    code = f"import sparsegemm; print(repr(sparsegemm._core.{KERNEL_CHOICE_READERS[variable]}()))"
    # The other variables unset (''), whatever the outer environment holds.
    env = {name: "" for name in KERNEL_CHOICE_READERS} | {variable: value}
    assert subprocess_output(python_subprocess, code, env) == [
        repr(expected_kernel_choice(variable, value))]


def subprocess_output(python_subprocess, code: str, env: dict) -> list[str]:
    result = python_subprocess(code, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_an_unknown_bitmap_prefetch_mode_is_refused():
    with pytest.raises(ValueError, match="'near', 'far' or 'off', not 'l3'"):
        _core.set_bitmap_prefetch("l3")


def test_an_unknown_bitmap_walk_is_refused():
    with pytest.raises(ValueError, match="'expand' or 'compress', not 'gather'"):
        _core.set_bitmap_walk("gather")
