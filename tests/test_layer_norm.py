"""sparsegemm.layer_norm (residual add + LayerNorm) against a float64 reference, on
every ISA path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsegemm

# Whole vectors of 16 / 8 lanes (float32 on AVX-512 / AVX2) and 8 / 4 (float64), the
# 4-vector steps of the reductions, and the partial vector after them.
WIDTHS = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 384, 1000]
DTYPES = [np.float32, np.float64]


def reference(x, residual=None, weight=None, bias=None, eps=1e-5):
    s = np.asarray(x, np.float64)
    if residual is not None:
        s = s + np.asarray(residual, np.float64)
    mean = s.mean(axis=-1, keepdims=True)
    variance = ((s - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (s - mean) / np.sqrt(variance + eps)
    if weight is not None:
        y = y * np.asarray(weight, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def tolerance(dtype):
    return {"rtol": 2e-5, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


def operands(rng, shape, dtype, residual=True, affine=True):
    x = rng.standard_normal(shape).astype(dtype)
    r = rng.standard_normal(shape).astype(dtype) if residual else None
    w = rng.standard_normal(shape[-1]).astype(dtype) if affine else None
    b = rng.standard_normal(shape[-1]).astype(dtype) if affine else None
    return x, r, w, b


@pytest.mark.parametrize("cols", WIDTHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference_on_every_isa(isa, rng, cols, dtype):
    x, r, w, b = operands(rng, (5, cols), dtype)
    result = sparsegemm.layer_norm(x, r, w, b)
    assert result.dtype == dtype and result.shape == x.shape
    np.testing.assert_allclose(result, reference(x, r, w, b), **tolerance(dtype))


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("weight", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cols", [7, 33])
def test_every_optional_operand(isa, rng, residual, weight, bias, cols):
    x, r, w, b = operands(rng, (4, cols), np.float32)
    r, w, b = (r if residual else None), (w if weight else None), (b if bias else None)
    np.testing.assert_allclose(sparsegemm.layer_norm(x, r, w, b, eps=1e-3),
                               reference(x, r, w, b, eps=1e-3), **tolerance(np.float32))


@pytest.mark.parametrize("rows", [1, 2, 3, 17, 300])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_rows_and_threads(isa, rng, rows, threads):
    x, r, w, b = operands(rng, (rows, 384), np.float32)
    result = sparsegemm.layer_norm(x, r, w, b, num_threads=threads)
    np.testing.assert_allclose(result, reference(x, r, w, b), **tolerance(np.float32))
    # Rows are independent: every split of them gives the same bits.
    np.testing.assert_array_equal(result, sparsegemm.layer_norm(x, r, w, b, num_threads=1))


def test_leading_dimensions_and_layouts(isa, rng):
    x, r, w, b = operands(rng, (2, 3, 5, 40), np.float32)
    expected = reference(x, r, w, b)
    np.testing.assert_allclose(sparsegemm.layer_norm(x, r, w, b), expected,
                               **tolerance(np.float32))
    fortran_x, strided_r = np.asfortranarray(x), np.repeat(r, 2, axis=-1)[..., ::2]
    assert not strided_r.flags.c_contiguous
    np.testing.assert_allclose(sparsegemm.layer_norm(fortran_x, strided_r, w, b), expected,
                               **tolerance(np.float32))
    wide = rng.standard_normal((6, 100)).astype(np.float32)
    view = wide[::2, 10:50]  # strided rows, each contiguous: read in place
    np.testing.assert_allclose(sparsegemm.layer_norm(view), reference(view),
                               **tolerance(np.float32))
    # A 1-d input is one row.
    np.testing.assert_allclose(sparsegemm.layer_norm(x[0, 0, 0]), reference(x[0, 0, 0]),
                               **tolerance(np.float32))


@pytest.mark.parametrize("into", ["x", "residual"])
def test_in_place(isa, rng, into):
    x, r, w, b = operands(rng, (9, 77), np.float32)
    expected = reference(x, r, w, b)
    target = x if into == "x" else r
    assert sparsegemm.layer_norm(x, r, w, b, out=target) is target
    np.testing.assert_allclose(target, expected, **tolerance(np.float32))


def test_large_mean_keeps_precision(isa, rng):
    """Activations far from zero (mean 1e4, spread 1): subtracting the mean before
    scaling keeps the normalised values as exact as the inputs allow."""
    x = (1e4 + rng.standard_normal((8, 256))).astype(np.float32)
    result = sparsegemm.layer_norm(x)
    # float32 inputs near 1e4 carry an absolute error of about 5e-4 of a unit spread.
    np.testing.assert_allclose(result, reference(x), atol=3e-3)


def test_constant_rows_and_non_finite_values(isa):
    ones = np.ones((2, 20), np.float32)
    np.testing.assert_array_equal(sparsegemm.layer_norm(ones), np.zeros_like(ones))
    x = np.zeros((3, 20), np.float32)
    x[0, 5], x[1, 19], x[2, 0] = np.nan, np.inf, -np.inf
    result = sparsegemm.layer_norm(x)
    assert np.isnan(result).all()  # as torch: a non-finite entry poisons its row only
    finite = np.ones((1, 20), np.float32)
    assert np.isfinite(sparsegemm.layer_norm(np.vstack([x, finite]))[3]).all()


def test_empty_inputs():
    for shape in [(0, 8), (3, 0), (0, 0)]:
        x = np.zeros(shape, np.float32)
        assert sparsegemm.layer_norm(x).shape == shape


def test_bad_input(rng):
    x, r, w, b = operands(rng, (3, 8), np.float32)
    with pytest.raises(TypeError, match="float32 or float64"):
        sparsegemm.layer_norm(x.astype(np.int32))
    with pytest.raises(TypeError, match="residual must have x's dtype"):
        sparsegemm.layer_norm(x, r.astype(np.float64))
    with pytest.raises(ValueError, match="residual must have x's shape"):
        sparsegemm.layer_norm(x, r[:2])
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\)"):
        sparsegemm.layer_norm(x, r, w[:7])
    with pytest.raises(TypeError, match="bias must have x's dtype"):
        sparsegemm.layer_norm(x, r, w, b.astype(np.float64))
    with pytest.raises(ValueError, match="at least one dimension"):
        sparsegemm.layer_norm(np.float32(1.0))
    for eps in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be finite"):
            sparsegemm.layer_norm(x, eps=eps)
    with pytest.raises(ValueError, match="out must be"):
        sparsegemm.layer_norm(x, out=np.empty((3, 8), np.float64))
    with pytest.raises(ValueError, match="out must be"):
        sparsegemm.layer_norm(x, out=np.empty((8, 3), np.float32).T)
    big = rng.standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="out must be x itself or not overlap it"):
        sparsegemm.layer_norm(big[:3], out=big[1:])
    frozen = np.empty((3, 8), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="out must be"):
        sparsegemm.layer_norm(x, out=frozen)


settings_for_hypothesis = settings(max_examples=60)


@settings_for_hypothesis
@given(rows=st.integers(0, 9), cols=st.integers(1, 140), residual=st.booleans(),
       affine=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1),
       isa=st.sampled_from(sparsegemm.available_isas()))
def test_random_shapes_every_isa(rows, cols, residual, affine, dtype, seed, isa):
    rng = np.random.default_rng(seed)
    x, r, w, b = operands(rng, (rows, cols), dtype, residual, affine)
    with sparsegemm.use_isa(isa):
        result = sparsegemm.layer_norm(x, r, w, b)
    np.testing.assert_allclose(result, reference(x, r, w, b), **tolerance(dtype))
