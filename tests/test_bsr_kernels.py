"""BSR products against a float64 numpy reference, on every ISA this CPU runs.

Shapes straddle the block edges (R - 1, R, R + 1), the vector widths (L - 1,
L, L + 1 for 4 and 8 and 16 lanes) and the register tiles (up to 4 vectors),
with empty block rows, all-zero and fully dense matrices, and every memory
order of the dense operand.
"""

from __future__ import annotations

import numpy as np
import pytest

import sparsegemm
from sparsegemm import BSRMatrix, linear, sparse_mm

ISAS = sparsegemm.available_isas()
DTYPES = [np.float32, np.float64]
# Every specialised shape in the kernel catalogue, then shapes that run the
# generic kernel.
SPECIALISED_BLOCKSIZES = [tuple(s) for s in sparsegemm.kernel_catalogue()["bsr_block_shapes"]]
GENERIC_BLOCKSIZES = [(3, 2), (2, 5)]
BLOCKSIZES = SPECIALISED_BLOCKSIZES + GENERIC_BLOCKSIZES
# Columns of the dense operand: the few-vector path (1-4), vector tails for
# 4/8/16 lanes, and 1-4 vector tiles with and without tails.
NS = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 48, 63, 64, 65, 97]


def random_block_sparse(rng, shape, blocksize, block_density, dtype):
    """A dense matrix whose nonzeros form whole blocks (edge blocks clipped)."""
    rows, cols = shape
    r, c = blocksize
    keep = rng.random((-(-rows // r), -(-cols // c))) < block_density
    mask = np.kron(keep, np.ones((r, c), dtype=bool))[:rows, :cols]
    return (rng.standard_normal(shape) * mask).astype(dtype)


def reference(W, B):
    return W.astype(np.float64) @ B.astype(np.float64)


def assert_matches(result, W, B, dtype, bias=None, what=""):
    expected = reference(W, B)
    if bias is not None:
        expected = expected + bias.astype(np.float64)[:, None]
    scale = np.abs(W.astype(np.float64)) @ np.abs(B.astype(np.float64))
    eps = 1e-5 if dtype == np.float32 else 1e-12
    error = np.abs(result.astype(np.float64) - expected) - eps * (scale + 1.0)
    if np.any(error > 0):
        index = np.unravel_index(np.argmax(error), error.shape)
        raise AssertionError(
            f"{what}: mismatch at {index}: got {result[index]}, expected {expected[index]}"
        )


def shapes_for(blocksize):
    r, c = blocksize
    rows = sorted({1, max(1, r - 1), r, r + 1, 2 * r + 1, 33})
    cols = sorted({1, max(1, c - 1), c + 1, 17, 33})
    return [(m, k) for m in rows for k in cols]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_matmul_matches_reference(isa, dtype, blocksize):
    rng = np.random.default_rng([ISAS.index(isa), *blocksize])
    with sparsegemm.use_isa(isa):
        for shape in shapes_for(blocksize):
            W = random_block_sparse(rng, shape, blocksize, 0.5, dtype)
            A = BSRMatrix.from_dense(W, blocksize)
            for n in NS:
                B = rng.standard_normal((shape[1], n)).astype(dtype)
                assert_matches(sparse_mm(A, B, num_threads=2), W, B, dtype,
                               what=f"{isa} {blocksize} {shape} n={n}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_linear_matches_reference(isa, dtype, blocksize):
    rng = np.random.default_rng([1, ISAS.index(isa), *blocksize])
    with sparsegemm.use_isa(isa):
        for shape in [(33, 17), (2 * blocksize[0] + 1, 40), (blocksize[0], 9)]:
            W = random_block_sparse(rng, shape, blocksize, 0.4, dtype)
            A = BSRMatrix.from_dense(W, blocksize)
            bias = rng.standard_normal(shape[0]).astype(dtype)
            for batch in [1, 2, 3, 4, 5, 16, 17, 65]:
                x = rng.standard_normal((batch, shape[1])).astype(dtype)
                y = linear(x, A, bias, num_threads=2)
                assert y.shape == (batch, shape[0]) and y.dtype == dtype
                assert_matches(y.T, W, x.T, dtype, bias, what=f"{isa} {blocksize} batch={batch}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("blocksize", [(4, 1), (16, 1), (4, 4), (3, 2)])
def test_special_structures(isa, blocksize):
    rng = np.random.default_rng(7)
    shape = (37, 29)
    structures = {
        "all zero": np.zeros(shape),
        "fully dense": rng.standard_normal(shape),
        "empty block rows": random_block_sparse(rng, shape, blocksize, 0.5, np.float64),
        "one entry": np.zeros(shape),
    }
    structures["empty block rows"][: 2 * blocksize[0]] = 0
    structures["empty block rows"][-3:] = 0
    structures["one entry"][36, 28] = 2.5  # in the padded corner block
    with sparsegemm.use_isa(isa):
        for name, W in structures.items():
            for dtype in DTYPES:
                Wd = W.astype(dtype)
                A = BSRMatrix.from_dense(Wd, blocksize)
                for n in [1, 3, 20, 40]:
                    B = rng.standard_normal((shape[1], n)).astype(dtype)
                    assert_matches(sparse_mm(A, B), Wd, B, dtype, what=f"{isa} {name} n={n}")


@pytest.mark.parametrize("isa", ISAS)
def test_dense_operand_memory_orders(isa):
    rng = np.random.default_rng(3)
    W = random_block_sparse(rng, (45, 38), (8, 1), 0.5, np.float32)
    A = BSRMatrix.from_dense(W, (8, 1))
    base = rng.standard_normal((38, 80)).astype(np.float32)
    with sparsegemm.use_isa(isa):
        for B in [base, np.asfortranarray(base), base[:, ::2], base[:, :3], base[:, 1:4].T.T,
                  np.asfortranarray(base)[:, :2]]:
            assert_matches(sparse_mm(A, B), W, B, np.float32, what=f"strides {B.strides}")
        v = base[:, 5]
        np.testing.assert_allclose(sparse_mm(A, v), W.astype(np.float64) @ v, rtol=1e-4, atol=1e-4)
        x = np.asfortranarray(rng.standard_normal((20, 38)).astype(np.float32))
        assert_matches(linear(x, A).T, W, x.T, np.float32, what="Fortran x")
        x3 = rng.standard_normal((2, 3, 38)).astype(np.float32)
        y3 = linear(x3, A)
        assert y3.shape == (2, 3, 45)
        assert_matches(y3.reshape(6, 45).T, W, x3.reshape(6, 38).T, np.float32, what="3-d x")


def test_out_argument_and_dtype_promotion():
    rng = np.random.default_rng(4)
    W = random_block_sparse(rng, (20, 12), (4, 1), 0.6, np.float32)
    A = BSRMatrix.from_dense(W, (4, 1))
    B = rng.standard_normal((12, 7))
    out = np.empty((20, 7))
    result = sparse_mm(A, B, out=out)  # float32 A with float64 B computes in float64
    assert result is out
    assert_matches(out, W, B, np.float64)
    with pytest.raises(ValueError, match="shape mismatch"):
        sparse_mm(A, rng.standard_normal((11, 3)))
    with pytest.raises(ValueError, match="shape mismatch"):
        linear(rng.standard_normal((3, 11)), A)
    with pytest.raises(ValueError, match="bias"):
        linear(rng.standard_normal((3, 12)), A, np.ones(19))


def test_matmul_operator():
    W = np.eye(9, dtype=np.float32) * 3
    A = BSRMatrix.from_dense(W, (4, 1))
    np.testing.assert_array_equal(A @ np.ones((9, 2), np.float32), np.full((9, 2), 3.0))
