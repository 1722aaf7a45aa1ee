"""CSR and BSR matrices with bfloat16 values, on every ISA this CPU supports.

The values are stored as bfloat16 (uint16 bit patterns in numpy) and the
kernels widen each one as they load it, computing in float32: every result is
checked against a float64 reference built from the same rounded weights,
within the float32 bound of conftest.assert_product_close. The scalar path is
forced through the ISA override (the ``isa`` fixture).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from sparsegemm import BSRMatrix, CSRMatrix, _core, feed_forward, linear, sddmm, sparse_mm
from sparsegemm._dtypes import bfloat16_rounded

# CSR, and BSR blocks with a register-tiled kernel (4x1, 16x1: rows a multiple
# of the vector width, 1x4) and one that runs the generic kernel (3x5).
FORMATS = ["csr", (4, 1), (16, 1), (1, 4), (3, 5)]


def bf16(dense: np.ndarray, fmt, threshold: float = 0.0):
    if fmt == "csr":
        return CSRMatrix.from_dense(dense, threshold, dtype="bfloat16")
    return BSRMatrix.from_dense(dense, fmt, threshold, dtype="bfloat16")


def reference_operand(a) -> sp.csr_array:
    """The rounded weights as float32 (zeros inside BSR blocks add exact zeros)."""
    return a.to_scipy() if isinstance(a, CSRMatrix) else sp.csr_array(a.to_dense())


@pytest.mark.parametrize("fmt", FORMATS)
def test_storage_layout_and_dtypes(fmt, random_sparse):
    dense = random_sparse((9, 70), 0.5, np.float32)
    a = bf16(dense, fmt)
    widest = CSRMatrix.from_dense(dense) if fmt == "csr" else BSRMatrix.from_dense(dense, fmt)
    assert a.value_dtype == "bfloat16" and a.dtype == np.float32
    assert a.data.dtype == np.uint16 and not a.data.flags.writeable
    np.testing.assert_array_equal(a.indices, widest.indices)
    np.testing.assert_array_equal(a.indptr, widest.indptr)
    # Values at 2 bytes instead of 4; indices and pointers unchanged.
    assert widest.nbytes - a.nbytes == 2 * a.data.size
    out = a.to_dense()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, bfloat16_rounded(dense))
    assert "bfloat16" in repr(a)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rounding_and_threshold_on_the_rounded_value(fmt):
    # Ties to even, NaN stays NaN, and what rounds to zero (1e-45) is not stored.
    values = np.array([[1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), np.inf, np.nan, 1e-45]],
                      np.float32)
    a = bf16(values, fmt)
    expected = [0x3F80, 0x3F82, 0xBF80, 0x7F80, 0x7FC0]
    if fmt == "csr":
        np.testing.assert_array_equal(a.data, expected)
    else:
        assert not np.isfinite(a.to_dense()[0, :5]).all()
        assert a.to_dense()[0, 5] == 0
    tiny = np.full((2, 3), 1e-45, np.float32)
    assert bf16(tiny, fmt).nnz == 0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 8, 17, 64, 130])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("pattern", ["uniform", "empty_rows", "skewed"])
def test_linear_batches_densities_patterns(isa, fmt, batch, density, pattern, random_sparse, rng,
                                           check_linear):
    a = bf16(random_sparse((37, 91), density, np.float32, pattern), fmt)
    x = rng.uniform(-1, 1, (batch, 91)).astype(np.float32)
    bias = rng.uniform(-1, 1, 37).astype(np.float32)
    check_linear(linear(x, a, num_threads=1), x, reference_operand(a))
    check_linear(linear(x, a, bias, num_threads=2), x, reference_operand(a), bias)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (37, 1), (16, 16), (17, 15), (5, 513)])
@pytest.mark.parametrize("n", [1, 2, 4, 5, 16, 17, 33])
def test_matmul_shapes(isa, fmt, shape, n, random_sparse, rng, check_sparse_mm):
    a = bf16(random_sparse(shape, 0.4, np.float32), fmt)
    b = rng.uniform(-1, 1, (shape[1], n)).astype(np.float32)
    check_sparse_mm(sparse_mm(a, b, num_threads=1), reference_operand(a), b)
    check_sparse_mm(sparse_mm(a, np.asfortranarray(b), num_threads=2), reference_operand(a), b)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n", [1, 5, 40])
def test_strided_operands(isa, fmt, n, random_sparse, rng, check_sparse_mm, check_linear):
    a = bf16(random_sparse((23, 50), 0.3, np.float32), fmt)
    wide = rng.uniform(-1, 1, (100, 2 * n)).astype(np.float32)
    b = wide[::2, ::2]  # neither C- nor Fortran-contiguous
    check_sparse_mm(sparse_mm(a, b), reference_operand(a), b)
    x = rng.uniform(-1, 1, (n, 100)).astype(np.float32)[:, ::2]
    check_linear(linear(x, a), x, reference_operand(a))
    x3 = rng.uniform(-1, 1, (2, n, 50)).astype(np.float32)
    check_linear(linear(x3, a), x3, reference_operand(a))


def test_csr_with_32_bit_column_indices(isa, rng, check_linear):
    # Past 65536 columns CSR stores int32 indices (16-bit below).
    cols = 70_000
    dense = np.zeros((3, cols), np.float32)
    picked = rng.choice(cols, 300, replace=False)
    dense[1, picked] = rng.uniform(-1, 1, 300)
    dense[2, cols - 1] = 2.0
    a = bf16(dense, "csr")
    for batch in (1, 3, 40):
        x = rng.uniform(-1, 1, (batch, cols)).astype(np.float32)
        check_linear(linear(x, a), x, reference_operand(a))


@pytest.mark.parametrize("batch", [2, 17, 40])
def test_csr_rows_longer_than_a_widened_chunk(isa, batch, rng, check_linear):
    # The panel kernel widens bfloat16 values 256 at a time: rows of 255-257 and 600
    # entries cross that boundary, and an empty row keeps its bias.
    cols = 700
    dense = np.zeros((6, cols), np.float32)
    for row, count in enumerate([255, 256, 257, 600, 0, 1]):
        dense[row, rng.choice(cols, count, replace=False)] = rng.uniform(-1, 1, count)
    a = bf16(dense, "csr")
    x = rng.uniform(-1, 1, (batch, cols)).astype(np.float32)
    bias = rng.uniform(-1, 1, 6).astype(np.float32)
    check_linear(linear(x, a, bias), x, reference_operand(a), bias)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 3, 40])
def test_activation_epilogue(isa, fmt, batch, random_sparse, rng):
    a = bf16(random_sparse((29, 64), 0.5, np.float32), fmt)
    x = rng.uniform(-1, 1, (batch, 64)).astype(np.float32)
    bias = rng.uniform(-1, 1, 29).astype(np.float32)
    plain = linear(x, a, bias)
    np.testing.assert_array_equal(linear(x, a, bias, activation="relu"), np.maximum(plain, 0))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 40])
def test_pattern_only_products_take_bfloat16_values(isa, fmt, batch, random_sparse, rng):
    a = bf16(random_sparse((21, 40), 0.5, np.float32), fmt)
    if fmt == "csr":
        pattern = CSRMatrix.pattern(a.indptr, a.indices, a.shape, dtype="bfloat16")
        run = _core.csr_linear
    else:
        pattern = BSRMatrix.pattern(a.indptr, a.indices, a.shape, fmt, dtype="bfloat16")
        run = _core.bsr_linear
    assert not pattern.has_values and pattern.value_dtype == "bfloat16"
    x = rng.uniform(-1, 1, (batch, 40)).astype(np.float32)
    out = np.empty((batch, 21), np.float32)
    run(pattern._handle, x, out, None, 1, np.ascontiguousarray(a.data).reshape(-1))
    np.testing.assert_array_equal(out, linear(x, a, num_threads=1))
    with pytest.raises(TypeError, match="values must have dtype uint16"):
        run(pattern._handle, x, out, None, 1, a.to_dense().reshape(-1)[: a.data.size])
    with pytest.raises(ValueError, match="pattern"):
        run(pattern._handle, x, out, None, 1, None)


@pytest.mark.parametrize("fmt", FORMATS)
def test_constructors_round_trips_and_conversions(fmt, random_sparse, rng):
    dense = random_sparse((12, 40), 0.5, np.float32)
    a = bf16(dense, fmt)
    cls = type(a)
    kwargs = {} if fmt == "csr" else {"blocksize": fmt}
    rebuilt = cls((a.data, a.indices, a.indptr), shape=a.shape, dtype="bfloat16", **kwargs)
    np.testing.assert_array_equal(rebuilt.data, a.data)
    for copy in (pickle.loads(pickle.dumps(a)), a.copy()):
        assert copy.value_dtype == "bfloat16"
        np.testing.assert_array_equal(copy.data, a.data)
    widened = a.astype(np.float32)
    assert widened.value_dtype == np.float32
    np.testing.assert_array_equal(widened.to_dense(), a.to_dense())
    assert a.astype("bfloat16") is a
    np.testing.assert_array_equal(widened.astype("bfloat16").data, a.data)
    np.testing.assert_array_equal(cls(widened, dtype="bfloat16").data, a.data)
    assert a.T.value_dtype == "bfloat16"
    np.testing.assert_array_equal(a.T.to_dense(), a.to_dense().T)
    from_scipy = cls.from_scipy(sp.csr_array(dense), dtype="bfloat16", **kwargs)
    np.testing.assert_array_equal(from_scipy.to_dense(), a.to_dense())
    scipy_back = a.to_scipy() if fmt == "csr" else a.to_scipy(pad=True)
    assert scipy_back.dtype == np.float32
    np.testing.assert_array_equal(scipy_back.toarray()[:12, :40], a.to_dense())
    if fmt == "csr":
        np.testing.assert_array_equal(a.with_data(a.data).data, a.data)
        np.testing.assert_array_equal(a.with_data(a.to_scipy().data).data, a.data)
    # float64 operands promote the product to float64 (through float64 values).
    x = rng.uniform(-1, 1, (2, 40))
    np.testing.assert_allclose(linear(x, a), x @ a.to_dense().astype(np.float64).T, rtol=1e-12)


def test_fused_pair_and_sddmm_take_bfloat16_csr(random_sparse, rng):
    first = bf16(random_sparse((30, 20), 0.5, np.float32), "csr")
    second = bf16(random_sparse((10, 30), 0.5, np.float32), "csr")
    x = rng.uniform(-1, 1, (4, 20)).astype(np.float32)
    hidden = np.maximum(linear(x, first), 0)
    np.testing.assert_allclose(feed_forward(x, first, second, activation="relu"),
                               linear(hidden, second), rtol=1e-5, atol=1e-6)
    left, right = rng.uniform(-1, 1, (30, 6)), rng.uniform(-1, 1, (20, 6))
    as_float = first.astype(np.float64)
    np.testing.assert_array_equal(sddmm(first, left, right), sddmm(as_float, left, right))


@pytest.mark.parametrize("fmt", FORMATS)
def test_nan_and_inf_weights_propagate(isa, fmt):
    dense = np.zeros((8, 20), np.float32)
    dense[1, 3], dense[5, 7], dense[6, 0] = np.nan, np.inf, 1.0
    a = bf16(dense, fmt)
    for batch in (1, 33):
        y = linear(np.ones((batch, 20), np.float32), a)
        assert np.isnan(y[:, 1]).all() and np.isposinf(y[:, 5]).all()
        assert (y[:, 6] == 1).all() and (y[:, 0] == 0).all()


def test_bad_input_raises_clearly():
    a = bf16(np.eye(4, dtype=np.float32), "csr")
    b = bf16(np.eye(4, dtype=np.float32), (2, 2))
    with pytest.raises(ValueError, match="shape mismatch"):
        linear(np.ones((2, 5), np.float32), a)
    with pytest.raises(TypeError, match="bfloat16 data"):
        CSRMatrix((np.zeros(1, np.complex64), [0], [0, 1]), (1, 4), dtype="bfloat16")
    with pytest.raises(ValueError, match="padding entries must be zero"):
        BSRMatrix((np.array([[[1.0, 1.0]]], np.float32), [0], [0, 1]), (1, 1), dtype="bfloat16")
    with pytest.raises(ValueError, match="values must have 4 entries"):
        _core.csr_linear(a._handle, np.ones((1, 4), np.float32), np.empty((1, 4), np.float32),
                         None, 1, np.zeros(3, np.uint16))
    with pytest.raises(TypeError, match="float32"):  # the operands of a bfloat16 matrix
        _core.bsr_linear(b._handle, np.ones((1, 4)), np.empty((1, 4)), None, 1, None)
    with pytest.raises(ValueError, match="data must have shape"):
        a.with_data(np.zeros(3, np.uint16))
