"""``sparsegemm.feed_forward``: two sparse products in one call, on every ISA.

The fused path (CSR weights, at least as many 64-row panels as threads) keeps
the hidden activations in cache panel by panel; every other case makes two
``linear`` calls. Both are checked against a float64 reference of
``act(x @ W1.T + b1) @ W2.T + b2`` with a rounding bound over both products.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsegemm
from sparsegemm import BitmapMatrix, BSRMatrix, CSRMatrix, feed_forward, linear
from test_activation_epilogue import reference_activation

DTYPES = [np.float32, np.float64]


def reference_feed_forward(x, w1, b1, activation, w2, b2):
    """(result, magnitude) in float64: the product and the same with every term made
    non-negative, which bounds the rounding of any summation order."""
    x64 = np.asarray(x, dtype=np.float64)
    flat = x64.reshape(-1, x64.shape[-1])
    w1, w2 = np.asarray(w1, np.float64), np.asarray(w2, np.float64)
    hidden = flat @ w1.T + (0 if b1 is None else np.asarray(b1, np.float64))
    hidden_size = np.abs(flat) @ np.abs(w1).T + (0 if b1 is None else np.abs(b1))
    if activation is not None:
        hidden = reference_activation(hidden, activation)
        hidden_size = hidden_size + np.abs(hidden)  # GELU's own rounding scales with |h|
    out = hidden @ w2.T + (0 if b2 is None else np.asarray(b2, np.float64))
    size = hidden_size @ np.abs(w2).T + (0 if b2 is None else np.abs(b2))
    shape = x64.shape[:-1] + (w2.shape[0],)
    return out.reshape(shape), size.reshape(shape)


def assert_feed_forward_close(result, x, w1, b1, activation, w2, b2, dtype):
    expected, size = reference_feed_forward(x, w1, b1, activation, w2, b2)
    assert result.shape == expected.shape and result.dtype == np.dtype(dtype)
    # Terms along both products, plus GELU's approximation (about 5e-7 in float32).
    terms = w1.shape[1] + w2.shape[1] + 4
    tolerance = 4 * terms * np.finfo(dtype).eps + (1e-6 if activation else 0)
    error = np.abs(result.astype(np.float64) - expected)
    worst = np.unravel_index(np.argmax(error - tolerance * size), error.shape) if error.size else ()
    assert np.all(error <= tolerance * size + np.finfo(dtype).tiny), (
        f"at {worst}: got {result[worst]}, expected {expected[worst]}")


def _random_sparse(rng, shape, density, dtype):
    values = rng.uniform(0.5, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return np.where(rng.random(shape) < density, values, 0.0).astype(dtype)


def _weights(rng, in_features, hidden, out_features, density, dtype):
    return (_random_sparse(rng, (hidden, in_features), density, dtype),
            _random_sparse(rng, (out_features, hidden), density, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", [None, "relu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("rows", [1, 7, 63, 64, 65, 128, 129, 300])
def test_matches_the_reference_on_every_isa(isa, rng, dtype, activation, rows):
    w1, w2 = _weights(rng, 40, 96, 33, 0.3, dtype)
    b1 = rng.standard_normal(96).astype(dtype)
    b2 = rng.standard_normal(33).astype(dtype)
    x = rng.standard_normal((rows, 40)).astype(dtype)
    for threads in (1, 2, 3):
        got = feed_forward(x, CSRMatrix.from_dense(w1), CSRMatrix.from_dense(w2), b1, b2,
                           activation=activation, num_threads=threads)
        assert_feed_forward_close(got, x, w1, b1, activation, w2, b2, dtype)


@pytest.mark.parametrize("density", [0.0, 1.0])
def test_all_zero_and_fully_dense_weights(isa, rng, density):
    w1, w2 = _weights(rng, 17, 130, 65, density, np.float32)
    x = rng.standard_normal((257, 17)).astype(np.float32)
    got = feed_forward(x, CSRMatrix.from_dense(w1), CSRMatrix.from_dense(w2), activation="gelu",
                       num_threads=2)
    assert_feed_forward_close(got, x, w1, None, "gelu", w2, None, np.float32)


def test_empty_rows_and_wide_panels(isa, rng):
    # Hidden rows with no entries, and a hidden size whose panel is narrower than the
    # input's (the second product runs on sub-panels of the first's).
    w1, w2 = _weights(rng, 24, 2500, 20, 0.05, np.float32)
    w1[::3] = 0
    x = rng.standard_normal((400, 24)).astype(np.float32)
    got = feed_forward(x, CSRMatrix.from_dense(w1), CSRMatrix.from_dense(w2), activation="relu",
                       num_threads=2)
    assert_feed_forward_close(got, x, w1, None, "relu", w2, None, np.float32)


def test_leading_dimensions_strided_and_fortran_inputs(rng):
    w1, w2 = _weights(rng, 12, 48, 10, 0.4, np.float64)
    a1, a2 = CSRMatrix.from_dense(w1), CSRMatrix.from_dense(w2)
    base = rng.standard_normal((3, 90, 24))
    for x in (base[..., ::2], np.asfortranarray(base[0, :, :12]), base[:, ::3, 5:17]):
        got = feed_forward(x, a1, a2, num_threads=2)
        assert_feed_forward_close(got, x, w1, None, None, w2, None, np.float64)


def test_scipy_weights_and_promotion_follow_linear(rng):
    w1, w2 = _weights(rng, 16, 32, 8, 0.5, np.float32)
    x = rng.standard_normal((70, 16)).astype(np.float32)
    bias = np.ones(32)  # float64: promotes, as linear does
    got = feed_forward(x, sp.csr_matrix(w1), CSRMatrix.from_dense(w2), bias, num_threads=2)
    two_calls = linear(linear(x, sp.csr_matrix(w1), bias), CSRMatrix.from_dense(w2))
    assert got.dtype == two_calls.dtype == np.float64
    assert_feed_forward_close(got, x, w1, bias, None, w2, None, np.float64)


@pytest.mark.parametrize("first_format", [BSRMatrix, BitmapMatrix])
def test_other_formats_make_the_two_linear_calls(rng, first_format):
    w1, w2 = _weights(rng, 16, 32, 8, 0.5, np.float32)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    first = (BSRMatrix.from_dense(w1, blocksize=(4, 1)) if first_format is BSRMatrix
             else BitmapMatrix.from_dense(w1))
    got = feed_forward(x, first, CSRMatrix.from_dense(w2), activation="relu")
    expected = linear(linear(x, first, activation="relu"), CSRMatrix.from_dense(w2))
    np.testing.assert_array_equal(got, expected)


def test_bad_input_is_refused_with_what_was_wrong(rng):
    w1, w2 = _weights(rng, 16, 32, 8, 0.5, np.float32)
    a1, a2 = CSRMatrix.from_dense(w1), CSRMatrix.from_dense(w2)
    x = rng.standard_normal((100, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="second.shape\\[1\\] must equal first.shape\\[0\\]"):
        feed_forward(x, a1, a1)
    with pytest.raises(ValueError, match="x.shape\\[-1\\] must equal first.shape\\[1\\]"):
        feed_forward(x[:, :15], a1, a2)
    with pytest.raises(ValueError, match="activation"):
        feed_forward(x, a1, a2, activation="tanh")
    with pytest.raises(ValueError, match="bias must have shape \\(32,\\)"):
        feed_forward(x, a1, a2, np.ones(31, np.float32))
    with pytest.raises(ValueError, match="bias must have shape \\(8,\\)"):
        feed_forward(x, a1, a2, None, np.ones(9, np.float32))
    with pytest.raises(ValueError, match="at least one dimension"):
        feed_forward(np.float32(1.0), a1, a2)
    with pytest.raises(TypeError):
        feed_forward(x, w1, a2)  # a dense weight is not a sparse operand


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 200), in_features=st.integers(1, 40), hidden=st.integers(1, 90),
       out_features=st.integers(1, 40), density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       threads=st.integers(1, 3), activation=st.sampled_from([None, "relu", "gelu"]),
       seed=st.integers(0, 2**31 - 1))
def test_random_shapes(rows, in_features, hidden, out_features, density, threads, activation,
                       seed):
    rng = np.random.default_rng(seed)
    w1, w2 = _weights(rng, in_features, hidden, out_features, density, np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    x = rng.standard_normal((rows, in_features)).astype(np.float32)
    with sparsegemm.use_isa(sparsegemm.available_isas()[seed % len(sparsegemm.available_isas())]):
        got = feed_forward(x, CSRMatrix.from_dense(w1), CSRMatrix.from_dense(w2), b1,
                           activation=activation, num_threads=threads)
    assert_feed_forward_close(got, x, w1, b1, activation, w2, None, np.float32)


@pytest.mark.parametrize("rows", [1, 9, 64, 65, 100, 130])
def test_fewer_panels_than_threads_share_each_panel(isa, rng, rows):
    # With fewer panels of x than threads (drivers/product_driver.h linear_pair_team)
    # every thread runs its share of w1's rows into the panel's shared hidden
    # activations and, after a barrier, its share of w2's rows. Each output is still
    # summed by one thread in a fixed order: bitwise equal to one thread, for 2
    # panels with 3-4 threads as well (a barrier between panels).
    w1, w2 = _weights(rng, 300, 700, 260, 0.2, np.float32)
    w1[5:40] = 0  # empty hidden rows inside a thread's share
    b1 = rng.standard_normal(700).astype(np.float32)
    b2 = rng.standard_normal(260).astype(np.float32)
    x = rng.standard_normal((rows, 300)).astype(np.float32)
    a1, a2 = CSRMatrix.from_dense(w1), CSRMatrix.from_dense(w2)
    serial = feed_forward(x, a1, a2, b1, b2, activation="gelu", num_threads=1)
    assert_feed_forward_close(serial, x, w1, b1, "gelu", w2, b2, np.float32)
    for threads in (2, 3, 4):
        np.testing.assert_array_equal(
            feed_forward(x, a1, a2, b1, b2, activation="gelu", num_threads=threads), serial)
