"""The torch pattern cache keeps only patterns: every cached matrix (and its
transpose, and a bitmap's CSR twin) stores no values, since the kernels always
read the module's live ``values`` tensor."""

import pytest

torch = pytest.importorskip("torch")
from sparsegemm import BitmapMatrix, CSRMatrix
from sparsegemm.torch import SparseConv2d, SparseLinear, clear_cache
from sparsegemm.torch._cache import patterns
from torch import nn

CASES = [
    ("csr", None, torch.float32, None),
    ("csr", None, torch.float64, None),
    ("bsr", (4, 2), torch.float32, None),
    ("bsr", (4, 1), torch.float64, None),
    ("bitmap", None, torch.float32, None),
    ("bitmap", None, torch.float64, None),
    ("bitmap", None, torch.float32, torch.bfloat16),
]


def _cached_matrices():
    for entry in patterns._entries.values():
        yield entry.matrix
        if entry._transpose is not None:
            yield entry._transpose[0]
        if entry._csr is not None:
            yield entry._csr


def _index_bytes(matrix):
    """What a pattern-only matrix stores: its structure, nothing per value."""
    if isinstance(matrix, BitmapMatrix):
        return matrix.bits.nbytes + matrix.offsets.nbytes
    if isinstance(matrix, CSRMatrix):  # 16-bit column indices up to 65536 columns
        return matrix.nnz * (2 if matrix.shape[1] <= 65536 else 4) + matrix.indptr.nbytes
    return matrix.nnz_blocks * 4 + matrix.indptr.nbytes


@pytest.mark.parametrize(("fmt", "blocksize", "dtype", "weight_dtype"), CASES)
def test_cached_patterns_hold_no_values(prune, tolerance, fmt, blocksize, dtype, weight_dtype):
    clear_cache()
    torch.manual_seed(0)
    dense = prune(nn.Linear(70, 23, dtype=dtype), 0.7)
    sparse = SparseLinear.from_dense(dense, format=fmt, blocksize=blocksize,
                                     weight_dtype=weight_dtype)
    x = torch.randn(5, 70, dtype=dtype, requires_grad=True)
    with torch.no_grad():
        sparse(x)  # the direct inference path
    y = sparse(x)  # the op, and its backward: the transpose (and a bitmap's CSR twin)
    y.sum().backward()
    if weight_dtype is None:
        torch.testing.assert_close(y, dense(x), **tolerance(dtype))
    matrices = list(_cached_matrices())
    assert len(matrices) >= 2  # the pattern and its transpose at least
    for matrix in matrices:
        assert not matrix.has_values
        assert matrix.nbytes == _index_bytes(matrix)
        with pytest.raises(ValueError, match="holds only a sparsity pattern"):
            matrix.data  # noqa: B018
    pattern = matrices[0]
    assert pattern.shape == (23, 70) and pattern.nnz == sparse.values.numel()


def test_cached_conv_pattern_holds_no_values(prune):
    clear_cache()
    dense = prune(nn.Conv2d(3, 8, 3), 0.6)
    sparse = SparseConv2d.from_dense(dense)
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    sparse(x).sum().backward()
    matrices = list(_cached_matrices())
    assert matrices and all(not matrix.has_values for matrix in matrices)
