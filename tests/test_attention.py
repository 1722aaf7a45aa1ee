"""sparsegemm.attention against a float64 reference, on every ISA path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsegemm

# Score tiles of 64 keys on AVX-512 and 16 on AVX2, then single vectors (16 / 8 keys);
# dims in blocks of 32 / 16 for the output tiles.
KEY_LENGTHS = [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129]
DIMS = [1, 8, 15, 16, 17, 31, 32, 33, 64]


def reference(q, k, v, mask=None, scale=None):
    """float64 softmax(q k^T scale + mask) v; fully masked rows give zeros (as torch)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        mask = np.asarray(mask)
        scores = scores + (np.where(mask, 0.0, -np.inf) if mask.dtype == bool else mask)
    top = scores.max(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        weights = np.exp(scores - np.where(np.isfinite(top), top, 0))
    total = weights.sum(axis=-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return weights @ v


def random_heads(rng, batch, heads, rows, dims, layout="projection"):
    """float32 (batch, heads, rows, dims): a transposed view of a (batch, rows, heads,
    dims) projection (as transformers hands it), contiguous, or Fortran-ordered."""
    if layout == "projection":
        return rng.standard_normal((batch, rows, heads, dims), np.float32).transpose(0, 2, 1, 3)
    a = rng.standard_normal((batch, heads, rows, dims), np.float32)
    return np.asfortranarray(a) if layout == "fortran" else a


def assert_attention_close(result, expected):
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kv_len", KEY_LENGTHS)
@pytest.mark.parametrize("dims", DIMS)
def test_matches_reference_on_every_isa(isa, rng, kv_len, dims):
    q = random_heads(rng, 2, 3, 5, dims)
    k = random_heads(rng, 2, 3, kv_len, dims)
    v = random_heads(rng, 2, 3, kv_len, dims, layout="contiguous")
    assert_attention_close(sparsegemm.attention(q, k, v), reference(q, k, v))


@pytest.mark.parametrize("q_len", [1, 3, 4, 5, 31, 32, 33, 100])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_query_blocks_and_threads(isa, rng, q_len, threads):
    q = random_heads(rng, 1, 2, q_len, 32)
    k = random_heads(rng, 1, 2, 70, 32)
    v = random_heads(rng, 1, 2, 70, 32)
    result = sparsegemm.attention(q, k, v, num_threads=threads)
    assert_attention_close(result, reference(q, k, v))


@pytest.mark.parametrize("mask_shape", [(2, 3, 9, 67), (2, 1, 9, 67), (2, 1, 1, 67), (67,),
                                        (9, 1)])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_masks_broadcast(isa, rng, mask_shape, kind):
    q = random_heads(rng, 2, 3, 9, 24)
    k = random_heads(rng, 2, 3, 67, 24)
    v = random_heads(rng, 2, 3, 67, 24)
    mask = rng.random(mask_shape) > 0.3
    if kind == "float":
        mask = np.where(mask, rng.standard_normal(mask_shape), -np.inf).astype(np.float32)
    assert_attention_close(sparsegemm.attention(q, k, v, mask), reference(q, k, v, mask))


def test_fully_masked_rows_give_zeros_as_torch(isa, rng):
    q, k, v = (random_heads(rng, 1, 2, 6, 16) for _ in range(3))
    mask = np.ones((1, 1, 6, 6), bool)
    mask[..., 2, :] = False
    result = sparsegemm.attention(q, k, v, mask)
    assert np.all(result[:, :, 2] == 0)
    assert_attention_close(result, reference(q, k, v, mask))


def test_nan_in_scores_gives_nan_rows(isa, rng):
    q, k, v = (random_heads(rng, 1, 1, 5, 16) for _ in range(3))
    q = q.copy()
    q[0, 0, 1, 3] = np.nan
    result = sparsegemm.attention(q, k, v)
    assert np.isnan(result[0, 0, 1]).all()
    assert np.isfinite(np.delete(result[0, 0], 1, axis=0)).all()
    every_key_nan = np.full((1, 1, 5, 5), np.nan, np.float32)
    assert np.isnan(sparsegemm.attention(q, k, v, every_key_nan)).all()


def test_large_scores_do_not_overflow(isa, rng):
    q, k, v = (random_heads(rng, 1, 2, 7, 16) for _ in range(3))
    result = sparsegemm.attention(q * 100, k * 100, v)
    assert np.isfinite(result).all()
    assert_attention_close(result, reference(q * 100, k * 100, v))


@pytest.mark.parametrize("layout", ["projection", "contiguous", "fortran"])
def test_layouts_scale_three_d_and_out(isa, rng, layout):
    q = random_heads(rng, 2, 4, 11, 20, layout)
    k = random_heads(rng, 2, 4, 13, 20, layout)
    v = random_heads(rng, 2, 4, 13, 20, layout)
    assert_attention_close(sparsegemm.attention(q, k, v, scale=0.3), reference(q, k, v, scale=0.3))
    three_d = sparsegemm.attention(q[0], k[0], v[0])
    assert_attention_close(three_d, reference(q[0], k[0], v[0]))
    out = np.full((2, 11, 4, 20), np.nan, np.float32).transpose(0, 2, 1, 3)
    assert sparsegemm.attention(q, k, v, out=out) is out
    assert_attention_close(out, reference(q, k, v))


@pytest.mark.parametrize("shape", [(0, 2, 3, 4), (2, 0, 3, 4), (2, 3, 0, 4), (2, 3, 4, 0)])
def test_empty_operands(isa, shape):
    q = np.ones(shape, np.float32)
    result = sparsegemm.attention(q, q, q)
    assert result.shape == shape


def test_no_keys_gives_zeros(isa):
    q = np.ones((1, 2, 3, 4), np.float32)
    kv = np.ones((1, 2, 0, 4), np.float32)
    assert np.array_equal(sparsegemm.attention(q, kv, kv), np.zeros((1, 2, 3, 4), np.float32))


def test_bad_input_raises_clear_errors(rng):
    q = random_heads(rng, 1, 2, 3, 8)
    with pytest.raises(TypeError, match="float32"):
        sparsegemm.attention(q.astype(np.float64), q, q)
    with pytest.raises(ValueError, match="same shape"):
        sparsegemm.attention(q, q, q[:, :, :2])
    with pytest.raises(ValueError, match="does not match query"):
        sparsegemm.attention(q, q[:, :1], q[:, :1])
    with pytest.raises(ValueError, match="dims"):
        sparsegemm.attention(q[0, 0], q[0, 0], q[0, 0])
    with pytest.raises(ValueError, match="does not broadcast"):
        sparsegemm.attention(q, q, q, np.ones((4, 4), bool))
    with pytest.raises(TypeError, match="boolean"):
        sparsegemm.attention(q, q, q, np.ones((3, 3), np.int32))
    with pytest.raises(ValueError, match="finite"):
        sparsegemm.attention(q, q, q, scale=float("inf"))
    with pytest.raises(ValueError, match="out must be"):
        sparsegemm.attention(q, q, q, out=np.empty((1, 2, 3, 7), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        sparsegemm.attention(q, q, q, out=q)
    with pytest.raises(ValueError, match="num_threads"):
        sparsegemm.attention(q, q, q, num_threads=0)


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 2), heads=st.integers(1, 3), q_len=st.integers(1, 40),
       kv_len=st.integers(1, 90), dims=st.integers(1, 70), masked=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_hypothesis_random_shapes(batch, heads, q_len, kv_len, dims, masked, seed):
    rng = np.random.default_rng(seed)
    q = random_heads(rng, batch, heads, q_len, dims)
    k = random_heads(rng, batch, heads, kv_len, dims)
    v = random_heads(rng, batch, heads, kv_len, dims)
    mask = rng.random((batch, 1, q_len, kv_len)) > 0.2 if masked else None
    for isa in sparsegemm.available_isas():
        with sparsegemm.use_isa(isa):
            assert_attention_close(sparsegemm.attention(q, k, v, mask), reference(q, k, v, mask))


def self_attention_reference(w_qkv, b_qkv, w_out, b_out, x, batch, heads):
    """float64 (attention over heads of x @ w_qkv.T + b_qkv) @ w_out.T + b_out."""
    embed = w_out.shape[1]
    length, dims = x.shape[0] // batch, embed // heads
    qkv = x.astype(np.float64) @ w_qkv.T.astype(np.float64) + b_qkv

    def part(index):
        block = qkv[:, index * embed:(index + 1) * embed]
        return block.reshape(batch, length, heads, dims).transpose(0, 2, 1, 3)

    context = reference(part(0), part(1), part(2)).transpose(0, 2, 1, 3)
    return context.reshape(batch * length, embed) @ w_out.T.astype(np.float64) + b_out


def sparse_weight(rng, rows, cols, density):
    weight = rng.standard_normal((rows, cols), np.float32) / np.sqrt(cols)
    return np.where(rng.random((rows, cols)) < density, weight, 0).astype(np.float32)


# (batch, length, heads, embed, in, out, density): one token and one head; all-zero
# weights; rows across query blocks; 512 inputs at half density, which the product
# runs in column chunks (with the values in chunk order passed too).
SELF_ATTENTION_CASES = [(1, 1, 1, 4, 4, 4, 1.0), (2, 9, 4, 32, 35, 31, 0.3),
                        (3, 5, 2, 16, 16, 16, 0.0), (1, 67, 4, 64, 512, 64, 0.5)]


@pytest.mark.parametrize("batch,length,heads,embed,inputs,outputs,density", SELF_ATTENTION_CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_self_attention_in_one_call_matches_the_composition(
        isa, rng, batch, length, heads, embed, inputs, outputs, density, threads):
    w_qkv = sparse_weight(rng, 3 * embed, inputs, density)
    w_out = sparse_weight(rng, outputs, embed, density)
    b_qkv = rng.standard_normal(3 * embed).astype(np.float32)
    b_out = rng.standard_normal(outputs).astype(np.float32)
    x = rng.standard_normal((batch * length, inputs), np.float32)
    qkv = sparsegemm.CSRMatrix.from_dense(w_qkv)._handle
    out_proj = sparsegemm.CSRMatrix.from_dense(w_out)._handle
    chunk_cols, ordered = qkv.values_in_chunk_order(np.asarray(qkv.data))
    out = np.full((batch * length, outputs), np.nan, np.float32)
    sparsegemm._core.csr_self_attention(qkv, None, ordered, chunk_cols, b_qkv, out_proj, None,
                                        None, 0, b_out, x, batch, heads,
                                        (embed // heads) ** -0.5, out, threads)
    expected = self_attention_reference(w_qkv, b_qkv, w_out, b_out, x, batch, heads)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_self_attention_in_one_call_edge_shapes():
    """No rows, and an attention width of 0 (the output is the bias)."""
    core = sparsegemm._core
    w_qkv = sparsegemm.CSRMatrix.from_dense(np.zeros((0, 5), np.float32))._handle
    w_out = sparsegemm.CSRMatrix.from_dense(np.ones((3, 0), np.float32))._handle
    bias = np.arange(3, dtype=np.float32)
    out = np.full((4, 3), np.nan, np.float32)
    core.csr_self_attention(w_qkv, None, None, 0, None, w_out, None, None, 0, bias,
                            np.ones((4, 5), np.float32), 2, 1, 1.0, out, 2)
    np.testing.assert_array_equal(out, np.broadcast_to(bias, (4, 3)))
    empty = np.empty((0, 3), np.float32)
    core.csr_self_attention(w_qkv, None, None, 0, None, w_out, None, None, 0, bias,
                            np.ones((0, 5), np.float32), 0, 1, 1.0, empty, 2)


def test_self_attention_in_one_call_rejects_bad_operands(rng):
    w_qkv = sparsegemm.CSRMatrix.from_dense(sparse_weight(rng, 24, 8, 0.5))._handle
    w_out = sparsegemm.CSRMatrix.from_dense(sparse_weight(rng, 8, 8, 0.5))._handle
    x, out = np.ones((6, 8), np.float32), np.empty((6, 8), np.float32)

    def call(w_in=w_qkv, heads=2, batch=2, x=x, out=out, bias=None):
        sparsegemm._core.csr_self_attention(w_in, None, None, 0, bias, w_out, None, None, 0,
                                            None, x, batch, heads, 0.5, out, 1)

    call()
    with pytest.raises(ValueError, match="heads must be positive"):
        call(heads=3)
    with pytest.raises(ValueError, match="heads must be positive"):
        call(heads=0)
    with pytest.raises(ValueError, match="3 x 8 rows"):
        call(w_in=w_out)
    with pytest.raises(ValueError, match="sequences of equal length"):
        call(batch=4)
    with pytest.raises(ValueError, match="sequences of equal length"):
        call(batch=0)
    with pytest.raises(ValueError, match="out must have shape"):
        call(out=np.empty((6, 7), np.float32))
    with pytest.raises(ValueError, match="shape mismatch"):
        call(x=np.ones((6, 9), np.float32))
    with pytest.raises(ValueError, match="bias must have 24 entries"):
        call(bias=np.ones(8, np.float32))
