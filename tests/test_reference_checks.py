"""The test suite's own reference check must catch real errors."""

import numpy as np
import pytest
import scipy.sparse as sp


def _wide_row(columns):
    """One row with two stored entries, 1.0 and 1e-3, among ``columns`` columns."""
    a = np.zeros((1, columns), np.float32)
    a[0, 0], a[0, 1] = 1.0, 1e-3
    return sp.csr_array(a)


@pytest.mark.parametrize("columns", [4, 200_000])
def test_a_dropped_entry_fails_however_wide_the_matrix(columns, check_sparse_mm, check_linear):
    a = _wide_row(columns)
    b = np.ones((columns, 1), np.float32)
    dropped = np.array([[1.0]], np.float32)  # the 1e-3 term is missing
    with pytest.raises(AssertionError, match="entries wrong"):
        check_sparse_mm(dropped, a, b)
    with pytest.raises(AssertionError, match="entries wrong"):
        check_linear(dropped, b.T, a)
    check_sparse_mm(np.array([[1.001]], np.float32), a, b)  # the right answer passes
