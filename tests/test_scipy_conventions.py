"""The formats follow scipy's sparse-array conventions where they apply: ``@`` both
ways, ``.T``, ``copy``, ``todense``/``toarray`` and pickling."""

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sparsegemm import BSRMatrix, CSRMatrix


def pruned(rows=11, cols=9, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((rows, cols)).astype(dtype)
    dense[rng.random((rows, cols)) < 0.7] = 0
    return dense


def formats(dense):
    return [CSRMatrix.from_dense(dense), BSRMatrix.from_dense(dense, (4, 2)),
            BSRMatrix.from_dense(dense, (1, 3))]


@pytest.mark.parametrize("index", range(3))
def test_dense_on_the_left_is_the_linear_form(index):
    dense = pruned()
    A = formats(dense)[index]
    x = np.random.default_rng(1).standard_normal((5, 9))
    np.testing.assert_allclose(x @ A.T, x @ dense.T, rtol=1e-12, atol=1e-12)  # F.linear's x @ W.T
    y = np.random.default_rng(2).standard_normal((3, 11))
    np.testing.assert_allclose(y @ A, y @ dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y[0] @ A, y[0] @ dense, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("index", range(3))
def test_transpose_of_every_format(index):
    dense = pruned()
    A = formats(dense)[index]
    assert type(A.T) is type(A)
    np.testing.assert_array_equal(A.T.toarray(), dense.T)
    np.testing.assert_array_equal(A.T.T.todense(), dense)
    if isinstance(A, BSRMatrix):
        assert A.T.blocksize == A.blocksize[::-1]


def test_sparse_times_sparse_raises_a_clear_type_error():
    A = CSRMatrix.from_dense(pruned())
    for left, right in ((A, A.T), (A, sp.csr_array(pruned().T)), (sp.csr_array(pruned()), A.T),
                        (BSRMatrix.from_dense(pruned()), A.T)):
        with pytest.raises(TypeError, match="sparse @ sparse"):
            left @ right


@pytest.mark.parametrize("index", range(3))
def test_pickle_deepcopy_and_copy(index):
    dense = pruned(dtype=np.float32)
    A = formats(dense)[index]
    for clone in (pickle.loads(pickle.dumps(A)), copy.deepcopy(A), copy.copy(A), A.copy()):
        assert type(clone) is type(A) and clone is not A
        assert clone.dtype == A.dtype and clone.shape == A.shape and clone.nnz == A.nnz
        np.testing.assert_array_equal(clone.toarray(), dense)


def test_mixed_dtypes_follow_numpys_promotion_as_the_readme_says():
    A = CSRMatrix.from_dense(pruned(dtype=np.float32))
    assert (A @ np.ones((9, 2), dtype=np.int8)).dtype == np.float32  # as float32 @ int8
    assert (A @ np.ones((9, 2), dtype=np.int32)).dtype == np.float64  # as float32 @ int32
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "float32 @ int8" in readme
