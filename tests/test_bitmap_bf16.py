"""Bitmap matrices with bfloat16 values, on every ISA this CPU supports.

The values are stored as bfloat16 (uint16 bit patterns in numpy) and the
products compute in float32: each result is checked against a float64
reference built from the same rounded weights, within the float32 bound of
conftest.assert_product_close. The AVX-512 level has bfloat16 kernels of its
own where the CPU has VBMI2 (word expand loads) and runs the AVX2 ones
otherwise; the ``isa_with_extensions`` fixture runs both, and 'scalar' is
forced through the ISA override. Where the CPU also has AVX512-BF16, x
that is exactly bfloat16 (a bfloat16 model's input) runs a kernel of its
own (vdpbf16ps), so the product tests run with such x too ("bf16_exact").
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sparsegemm import BitmapMatrix, _core, linear, sparse_mm
from sparsegemm._dtypes import bfloat16_bits, bfloat16_rounded, bfloat16_to_float32

COLS = [1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 255, 256, 257]
BATCHES = [1, 2, 3, 4, 5, 8, 15, 16, 17]


def uniform_x(rng: np.random.Generator, shape: tuple[int, ...], bf16_exact: bool) -> np.ndarray:
    """Uniform float32 in [-1, 1), rounded to bfloat16 values when ``bf16_exact``."""
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    return bfloat16_rounded(x) if bf16_exact else x


def bf16(dense: np.ndarray, threshold: float = 0.0) -> BitmapMatrix:
    return BitmapMatrix.from_dense(dense, threshold, dtype="bfloat16")


def reference_operand(a: BitmapMatrix) -> sp.csr_array:
    """The stored (rounded) entries only, so 0 * inf never arises from an unstored one."""
    return a.to_scipy()


def test_storage_layout_and_dtypes(rng, random_sparse):
    dense = random_sparse((9, 70), 0.5, np.float32)
    a = bf16(dense)
    assert a.value_dtype == "bfloat16" and a.dtype == np.float32
    assert a.data.dtype == np.uint16 and not a.data.flags.writeable
    np.testing.assert_array_equal(a.bits, BitmapMatrix.from_dense(dense).bits)
    # 2 bytes per stored value, plus the bitmap and the row offsets.
    assert a.nbytes == 2 * a.nnz + 8 * a.bits.size + 8 * (9 + 1)
    dense_out = a.to_dense()
    assert dense_out.dtype == np.float32
    np.testing.assert_array_equal(dense_out[dense != 0], bfloat16_to_float32(a.data))
    np.testing.assert_allclose(dense_out, dense, rtol=2**-8, atol=0)
    assert "bfloat16" in repr(a)


def test_rounding_to_nearest_even():
    # Ties go to the even neighbour; what rounds to zero is not stored; NaN stays NaN.
    values = np.array([[1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -(1 + 2**-8), np.inf,
                        np.finfo(np.float32).max, np.nan, 1e-45]], np.float32)
    a = bf16(values)
    assert a.nnz == 7
    expected = [0x3F80, 0x3F82, 0x3F81, 0xBF80, 0x7F80, 0x7F80, 0x7FC0]
    np.testing.assert_array_equal(a.data, expected)
    np.testing.assert_array_equal(bfloat16_bits(values[0, :7]), expected)


@pytest.mark.parametrize("cols", COLS)
@pytest.mark.parametrize("batch", [1, 3, 17])
@pytest.mark.parametrize("bf16_exact", [False, True])
def test_linear_columns(isa_with_extensions, cols, batch, bf16_exact, random_sparse, rng,
                        check_linear):
    # 13 rows: groups of 4 (batch 1) and 2 (small batch) plus a remainder.
    a = bf16(random_sparse((13, cols), 0.5, np.float32))
    x = uniform_x(rng, (batch, cols), bf16_exact)
    bias = rng.uniform(-1, 1, 13).astype(np.float32)
    check_linear(linear(x, a, num_threads=1), x, reference_operand(a))
    check_linear(linear(x, a, bias, num_threads=1), x, reference_operand(a), bias)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("pattern", ["uniform", "empty_rows", "skewed"])
@pytest.mark.parametrize("bf16_exact", [False, True])
def test_linear_batches_densities_patterns(isa_with_extensions, batch, density, pattern,
                                           bf16_exact, random_sparse, rng, check_linear):
    a = bf16(random_sparse((23, 130), density, np.float32, pattern))
    x = uniform_x(rng, (batch, 130), bf16_exact)
    result = linear(x, a, num_threads=1)
    assert result.dtype == np.float32
    check_linear(result, x, reference_operand(a))
    if pattern == "uniform" and density in (0.0, 1.0):  # all-zero, fully dense
        assert a.nnz == density * 23 * 130
        assert result.any() == (density == 1.0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (37, 1), (13, 29), (7, 100), (5, 513)])
@pytest.mark.parametrize("n", [1, 2, 4, 5, 16, 17])
def test_matmul_shapes(isa_with_extensions, shape, n, random_sparse, rng, check_sparse_mm):
    a = bf16(random_sparse(shape, 0.5, np.float32))
    b = rng.uniform(-1, 1, (shape[1], n)).astype(np.float32)
    check_sparse_mm(sparse_mm(a, b), reference_operand(a), b)
    check_sparse_mm(sparse_mm(a, b[:, 0]), reference_operand(a), b[:, 0])


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_strided_operands(isa_with_extensions, n, random_sparse, rng, check_sparse_mm,
                          check_linear):
    a = bf16(random_sparse((21, 70), 0.4, np.float32))
    wide = np.zeros((140, 2 * n), np.float32)
    wide[::2, ::2] = rng.uniform(-1, 1, (70, n))
    b = wide[::2, ::2]  # row and column strides
    expected = sparse_mm(a, np.ascontiguousarray(b))
    check_sparse_mm(expected, reference_operand(a), b)
    np.testing.assert_array_equal(sparse_mm(a, b), expected)
    np.testing.assert_array_equal(sparse_mm(a, np.asfortranarray(b)), expected)
    rows = np.zeros((n, 100), np.float32)
    rows[:, :70] = b.T  # x with a row stride longer than its width
    check_linear(linear(rows[:, :70], a), b.T, reference_operand(a))


@pytest.mark.parametrize("n", [1, 3, 6, 40])
@pytest.mark.parametrize("bf16_exact", [False, True])
def test_threads(isa_with_extensions, n, bf16_exact, random_sparse, rng, check_linear):
    a = bf16(random_sparse((401, 500), 0.55, np.float32, "skewed"))
    x = uniform_x(rng, (n, 500), bf16_exact)
    serial = linear(x, a, num_threads=1)
    check_linear(serial, x, reference_operand(a))
    # Each row is computed by one thread in a fixed order: bitwise equal.
    np.testing.assert_array_equal(linear(x, a, num_threads=2), serial)


@pytest.mark.parametrize("batch", [1, 2, 7])
@pytest.mark.parametrize("bf16_exact", [False, True])
def test_inf_and_nan_in_x_as_the_float32_kernels(isa_with_extensions, batch, bf16_exact, rng,
                                                 check_linear):
    # Unstored entries never multiply x (Inf/NaN at unstored columns vanish);
    # at a stored column they propagate. The float32 bitmap kernels agree.
    # (Inf and NaN are bfloat16 values too: such x must not reach the
    # bfloat16-input kernel, which multiplies the unstored zeros.)
    W = np.zeros((9, 70), np.float32)
    W[:, ::3] = rng.uniform(-1, 1, (9, 24))
    a = bf16(W)
    x = uniform_x(rng, (batch, 70), bf16_exact)
    x[:, 1] = np.inf
    x[0, 2] = np.nan
    result = linear(x, a)
    assert np.isfinite(result).all()
    check_linear(result, x, reference_operand(a))
    x[-1, 3] = np.inf
    result = linear(x, a)
    check_linear(result, x, reference_operand(a))
    assert np.isinf(result[-1]).any()
    float32 = BitmapMatrix.from_dense(a.to_dense())
    np.testing.assert_array_equal(np.isnan(result), np.isnan(linear(x, float32)))


def test_nan_weights_propagate(isa_with_extensions, rng):
    W = rng.uniform(-1, 1, (5, 40)).astype(np.float32)
    W[2, 7] = np.nan
    a = bf16(W)
    assert a.nnz == W.size
    result = linear(rng.uniform(-1, 1, (3, 40)).astype(np.float32), a)
    assert np.isnan(result[:, 2]).all() and np.isfinite(np.delete(result, 2, axis=1)).all()


_GUARD_PAGE_SCRIPT = """
import ctypes, mmap, sys
import numpy as np
import sparsegemm
from sparsegemm import BitmapMatrix, _core
from sparsegemm._dtypes import bfloat16_rounded

variant, batch, exact = sys.argv[1], int(sys.argv[2]), sys.argv[3]
level, _, extensions = variant.partition("-")
sparsegemm.set_isa(level)
_core.set_use_avx512_extensions(_core.use_avx512_extensions() and extensions != "plain")
rng = np.random.default_rng(0)
W = np.where(rng.random((10, 201)) < 0.6, rng.uniform(-1, 1, (10, 201)), 0).astype(np.float32)
W[-1] = rng.uniform(-1, 1, 201)  # the last row is full
a = BitmapMatrix.from_dense(W, dtype="bfloat16")
# The values end exactly where an unreadable page starts: any read past them faults.
page = mmap.PAGESIZE
nbytes = a.nnz * 2
readable = -(-nbytes // page) * page
region = mmap.mmap(-1, readable + page)
base = ctypes.addressof(ctypes.c_char.from_buffer(region))
libc = ctypes.CDLL(None)
assert libc.mprotect(ctypes.c_void_p(base + readable), page, 0) == 0  # PROT_NONE
values = np.frombuffer(region, dtype=np.uint16, count=a.nnz, offset=readable - nbytes)
values[:] = a.data
x = rng.uniform(-1, 1, (batch, 201)).astype(np.float32)
if exact == "exact":
    x = bfloat16_rounded(x)  # the bfloat16-input kernel
out = np.empty((batch, 10), np.float32)
_core.bitmap_linear(a._handle, x, out, None, 1, values)
np.testing.assert_allclose(out, x @ a.to_dense().astype(np.float64).T, rtol=1e-4, atol=1e-4)
print("ok")
"""


@pytest.mark.parametrize("batch", [1, 4, 16])
@pytest.mark.parametrize("x_kind", ["float32", "exact"])
def test_values_are_not_read_past_their_end(isa_with_extensions, batch, x_kind,
                                            python_subprocess):
    argv = f"import sys; sys.argv = ['-', {isa_with_extensions!r}, '{batch}', '{x_kind}']\n"
    result = python_subprocess(argv + _GUARD_PAGE_SCRIPT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_constructors_round_trips_and_conversions(rng, random_sparse):
    import pickle

    dense = random_sparse((11, 90), 0.5, np.float32)
    a = bf16(dense)
    rebuilt = BitmapMatrix((a.data, a.bits), shape=a.shape, dtype="bfloat16")
    np.testing.assert_array_equal(rebuilt.data, a.data)
    from_floats = BitmapMatrix((a.to_dense()[dense != 0], a.bits), a.shape, dtype="bfloat16")
    np.testing.assert_array_equal(from_floats.data, a.data)
    for copy in (pickle.loads(pickle.dumps(a)), a.copy()):
        assert copy.value_dtype == "bfloat16"
        np.testing.assert_array_equal(copy.data, a.data)
    widened = a.astype(np.float32)
    assert widened.value_dtype == np.float32
    assert widened.astype("bfloat16").value_dtype == "bfloat16"
    np.testing.assert_array_equal(widened.to_dense(), a.to_dense())
    assert a.astype("bfloat16") is a
    assert BitmapMatrix(a).value_dtype == "bfloat16"
    np.testing.assert_array_equal(BitmapMatrix(widened, dtype="bfloat16").data, a.data)
    np.testing.assert_array_equal(a.with_data(a.data).data, a.data)
    np.testing.assert_array_equal(a.to_scipy().toarray(), a.to_dense())
    np.testing.assert_array_equal(a.T.to_dense(), a.to_dense().T)
    assert a.T.value_dtype == "bfloat16"
    # float64 operands promote the product to float64 (through float64 values).
    x = rng.uniform(-1, 1, (2, 90))
    np.testing.assert_allclose(linear(x, a), x @ a.to_dense().astype(np.float64).T, rtol=1e-12)


def test_bad_input_raises_clearly():
    a = bf16(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="shape mismatch"):
        linear(np.ones((2, 5), np.float32), a)
    with pytest.raises(ValueError, match="one value per set bit"):
        BitmapMatrix((np.zeros(3, np.uint16), np.ones(4, np.uint64)), (4, 4), dtype="bfloat16")
    with pytest.raises(ValueError, match="past the last column"):
        BitmapMatrix((np.zeros(1, np.uint16), np.array([1 << 5], np.uint64)), (1, 4),
                     dtype="bfloat16")
    with pytest.raises(TypeError, match="bfloat16 data"):
        BitmapMatrix((np.zeros(1, np.complex64), np.ones(1, np.uint64)), (1, 4), dtype="bfloat16")
    with pytest.raises(ValueError, match="values must have 4 entries"):
        _core.bitmap_linear(a._handle, np.ones((1, 4), np.float32), np.empty((1, 4), np.float32),
                            None, 1, np.zeros(3, np.uint16))
    with pytest.raises(TypeError, match="values must have dtype uint16"):
        _core.bitmap_linear(a._handle, np.ones((1, 4), np.float32), np.empty((1, 4), np.float32),
                            None, 1, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="float32"):  # the operands of a bfloat16 matrix
        _core.bitmap_linear(a._handle, np.ones((1, 4)), np.empty((1, 4)), None, 1, None)
    with pytest.raises(ValueError, match="data must have shape"):
        a.with_data(np.zeros(3, np.uint16))


@pytest.mark.parametrize("cols", [1, 16, 255, 256, 257, 513, 1000])
@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("bf16_exact", [False, True])
@pytest.mark.parametrize("value_dtype", ["bfloat16", "float32"])
def test_very_sparse_rows_walked_by_stored_columns(isa_with_extensions, cols, batch, bf16_exact,
                                                   value_dtype, rng, check_linear):
    # At most 12% stored (the walk's line is 17%), up to 3 vectors: on AVX-512
    # (bfloat16 values: with VBMI2) the rows are walked by their stored columns
    # (ColumnWindowPlan), one gather per window of up to 16 weights within 256
    # columns. Rows hold runs of exactly 16, 17 and 32 stored weights, one at
    # the last column, none (empty rows), sparse noise, and weights 16, 17 and
    # 18 columns apart (16 to a window, a window spanning exactly 255 columns,
    # windows cut at 15 by their span) and at 0, 255, 256, 511 (two windows,
    # offsets 0 and 255).
    W = np.zeros((16, cols), np.float32)
    W[1, :min(cols, 16)] = 1.5
    W[2, :min(cols, 17)] = -0.75
    W[3, :min(cols, 32)] = 0.25
    W[4, cols - 1] = 3.0
    noise = rng.uniform(-1, 1, (16, cols)).astype(np.float32)
    W[6:12] = np.where(rng.random((6, cols)) < 0.03, noise[6:12], 0)
    for row, step in ((12, 16), (13, 17), (14, 18)):
        W[row, ::step] = noise[row, ::step]
    pair_columns = [c for c in (0, 255, 256, 511) if c < cols]
    W[15, pair_columns] = np.array([2.0, -1.0, 0.5, 4.0], np.float32)[:len(pair_columns)]
    if W.astype(bool).mean() > 0.12:  # the narrow shapes: keep them under the line
        W[[1, 2, 3, 12, 13, 14, 15], :] = 0
    a = bf16(W) if value_dtype == "bfloat16" else BitmapMatrix.from_dense(W)
    x = uniform_x(rng, (batch, cols), bf16_exact)
    bias = rng.uniform(-1, 1, 16).astype(np.float32)
    for b in (None, bias):
        result = linear(x, a, b, num_threads=1)
        check_linear(result, x, reference_operand(a), b)
        np.testing.assert_array_equal(linear(x, a, b, num_threads=2), result)
        if b is None:
            assert not result[:, [0, 5]].any()  # the empty rows
    # The plan exists exactly where the walk by stored columns ran.
    walked = isa_with_extensions.startswith("avx512") and (
        value_dtype == "float32" or _core.use_avx512_extensions())
    assert (a.column_plan_bytes > 0) == walked
    # Inf/NaN at unstored columns never reach y; at a stored one they do.
    unstored = np.flatnonzero(~W.astype(bool).any(axis=0))
    if unstored.size:
        x[:, unstored[0]] = np.inf
        x[0, unstored[-1]] = np.nan
        result = linear(x, a)
        assert np.isfinite(result).all()
        check_linear(result, x, reference_operand(a))
    x[-1, cols - 1] = np.inf
    assert np.isinf(linear(x, a)[-1, 4])
