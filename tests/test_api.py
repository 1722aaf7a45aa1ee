"""The numpy-level API: sparse_mm, linear, dtype rules, errors, runtime settings,
and hypothesis property tests against numpy/scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sparsegemm
from sparsegemm import CSRMatrix, linear, sparse_mm

# --- dtype promotion (python/sparsegemm/_dtypes.py) -------------------------------------------


@pytest.mark.parametrize("a_dtype, b_dtype, expected", [
    (np.float32, np.float32, np.float32),
    (np.float32, np.float16, np.float32),
    (np.float32, np.float64, np.float64),
    (np.float64, np.float32, np.float64),
    (np.float32, np.int32, np.float64),
    (np.float32, np.int8, np.float32),  # numpy: int8 fits float32 exactly
    (np.float32, np.bool_, np.float32),
    (np.float64, np.uint64, np.float64),
])
def test_sparse_mm_dtype_promotion(a_dtype, b_dtype, expected, check_sparse_mm):
    a = CSRMatrix.from_dense(np.array([[1, 0, 2], [0, 3, 0]], dtype=a_dtype))
    b = np.array([[1, 2], [3, 4], [5, 6]]).astype(b_dtype)
    result = sparse_mm(a, b)
    assert result.dtype == expected
    check_sparse_mm(result, a, b)


@pytest.mark.parametrize("b_dtype", [np.complex64, np.complex128, object, "U2", "datetime64[s]"])
def test_sparse_mm_rejects_unsupported_dtypes(b_dtype):
    a = CSRMatrix.from_dense(np.eye(2))
    with pytest.raises(TypeError, match="dtype"):
        sparse_mm(a, np.zeros((2, 2), dtype=b_dtype))
    with pytest.raises(TypeError, match="dtype"):
        linear(np.zeros((2, 2), dtype=b_dtype), a)


def test_linear_dtype_includes_bias():
    weight = CSRMatrix.from_dense(np.eye(2, dtype=np.float32))
    x = np.ones((3, 2), np.float32)
    assert linear(x, weight).dtype == np.float32
    assert linear(x, weight, np.zeros(2, np.float32)).dtype == np.float32
    assert linear(x, weight, np.zeros(2, np.float64)).dtype == np.float64
    with pytest.raises(TypeError):
        linear(x, weight, np.zeros(2, np.complex64))


# --- shapes and errors --------------------------------------------------------------------


def test_shape_mismatch_messages_show_both_shapes():
    a = CSRMatrix.from_dense(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 2\)"):
        sparse_mm(a, np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(3, 4\)"):
        linear(np.ones((2, 5)), a)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        linear(np.ones((2, 4)), a, np.ones(4))


def test_operand_kinds():
    a = CSRMatrix.from_dense(np.eye(3))
    with pytest.raises(TypeError, match="from_dense"):
        sparse_mm(np.eye(3), np.ones((3, 1)))
    with pytest.raises(TypeError, match="CSRMatrix"):
        sparse_mm([[1, 0], [0, 1]], np.ones((2, 1)))
    with pytest.raises(TypeError, match="from_dense"):
        linear(np.ones((1, 3)), np.eye(3))
    with pytest.raises(ValueError, match="1- or 2-dimensional"):
        sparse_mm(a, np.ones((3, 1, 1)))
    with pytest.raises(ValueError, match="1- or 2-dimensional"):
        sparse_mm(a, np.float64(1.0))
    with pytest.raises(ValueError, match="at least one dimension"):
        linear(np.float64(1.0), a)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "bsr", "lil", "dok", "dia"])
def test_scipy_operands(fmt, random_sparse, rng, check_sparse_mm, check_linear):
    dense = random_sparse((8, 6), 0.5)
    source = sp.csr_array(dense).asformat(fmt)
    b = rng.uniform(-1, 1, (6, 3))
    check_sparse_mm(sparse_mm(source, b), dense, b)
    check_linear(linear(b.T, source), b.T, dense)


def test_matmul_operator(random_sparse, rng, check_sparse_mm):
    a = CSRMatrix.from_dense(random_sparse((5, 7), 0.5))
    b = rng.uniform(-1, 1, (7, 2))
    check_sparse_mm(a @ b, a, b)
    check_sparse_mm(a @ b[:, 0], a, b[:, 0])


def test_sparse_mm_accepts_lists():
    a = CSRMatrix.from_dense(np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(sparse_mm(a, [[1.0], [1.0]]), [[3.0]])
    np.testing.assert_array_equal(linear([1, 1], a), [3.0])


def test_out_argument_errors():
    a = CSRMatrix.from_dense(np.ones((3, 4), np.float32))
    b = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"out has shape \(5, 3\), expected \(3, 5\)"):
        sparse_mm(a, b, out=np.empty((5, 3), np.float32))
    with pytest.raises(TypeError, match="dtype float64, expected float32"):
        sparse_mm(a, b, out=np.empty((3, 5)))
    read_only = np.empty((3, 5), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        sparse_mm(a, b, out=read_only)
    with pytest.raises(ValueError, match="contiguous rows"):
        sparse_mm(a, b, out=np.empty((3, 5), np.float32, order="F"))
    with pytest.raises(TypeError, match="numpy array"):
        sparse_mm(a, b, out=[[0.0] * 5] * 3)
    square = CSRMatrix.from_dense(np.ones((4, 4), np.float32))
    shared = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        sparse_mm(square, shared, out=shared)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None.__class__])
def test_num_threads_validation(bad):
    a = CSRMatrix.from_dense(np.eye(2))
    with pytest.raises(ValueError, match="num_threads"):
        sparse_mm(a, np.ones((2, 1)), num_threads=bad)
    with pytest.raises(ValueError, match="num_threads"):
        linear(np.ones((1, 2)), a, num_threads=bad)
    with pytest.raises(ValueError, match="num_threads"):
        sparsegemm.set_num_threads(bad)


def test_set_num_threads_round_trip():
    before = sparsegemm.get_num_threads()
    try:
        sparsegemm.set_num_threads(3)
        assert sparsegemm.get_num_threads() == 3
        assert sparsegemm.show_config(print_out=False)["num_threads"] == 3
    finally:
        sparsegemm.set_num_threads(None)
    assert sparsegemm.get_num_threads() == before


@pytest.mark.parametrize("env, expected", [
    ({"SPARSEGEMM_NUM_THREADS": "3", "OMP_NUM_THREADS": "5"}, 3),
    ({"SPARSEGEMM_NUM_THREADS": "", "OMP_NUM_THREADS": "5,2"}, 5),
    ({"SPARSEGEMM_NUM_THREADS": "zero", "OMP_NUM_THREADS": "2"}, 2),
])
def test_num_threads_environment(python_subprocess, env, expected):
    result = python_subprocess("import sparsegemm; print(sparsegemm.get_num_threads())", env=env)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == expected


def test_show_config(capsys):
    assert sparsegemm.show_config() is None  # prints, and a REPL echoes nothing more
    printed = capsys.readouterr().out
    config = sparsegemm.show_config(print_out=False)
    assert capsys.readouterr().out == ""
    assert config["isa"] == sparsegemm.get_isa() and config["isa"] in printed
    assert config["available_isas"] == sparsegemm.available_isas()
    assert "libgomp" in config["openmp_runtime"]


# --- linear semantics ---------------------------------------------------------------------


def test_linear_matches_f_linear_formula(random_sparse, rng):
    dense_w = random_sparse((6, 9), 0.5)
    x = rng.uniform(-1, 1, (2, 3, 9))
    bias = rng.uniform(-1, 1, 6)
    expected = x @ dense_w.T + bias
    np.testing.assert_allclose(linear(x, CSRMatrix.from_dense(dense_w), bias), expected,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(linear(x[0, 0], CSRMatrix.from_dense(dense_w)), x[0, 0] @ dense_w.T,
                               rtol=1e-12, atol=1e-12)


def test_linear_bias_list_and_broadcast_shape_errors():
    weight = CSRMatrix.from_dense(np.eye(2))
    np.testing.assert_array_equal(linear(np.ones((1, 2)), weight, [1.0, 2.0]), [[2.0, 3.0]])
    with pytest.raises(ValueError, match="bias"):
        linear(np.ones((1, 2)), weight, np.ones((1, 2)))
    with pytest.raises(ValueError, match="bias"):
        linear(np.ones((1, 2)), weight, 1.0)


# --- NaN and Inf -------------------------------------------------------------------------


def test_nan_inf_in_stored_entries_propagate(check_sparse_mm):
    dense = np.array([[np.nan, 0.0, 0.0], [0.0, np.inf, 0.0], [0.0, 0.0, 1.0]])
    a = CSRMatrix.from_dense(dense)
    b = np.array([[1.0, 2.0], [0.0, -1.0], [np.inf, 3.0]])
    result = sparse_mm(a, b)
    # Row 0: NaN * anything; row 1: inf * 0 = NaN and inf * -1 = -inf; row 2: 1 * inf.
    assert np.isnan(result[0]).all()
    assert np.isnan(result[1, 0]) and result[1, 1] == -np.inf
    assert result[2, 0] == np.inf and result[2, 1] == 3.0
    check_sparse_mm(result, a, b)
    np.testing.assert_array_equal(result, sp.csr_array(dense) @ b)


def test_structural_zeros_never_meet_inf():
    a = CSRMatrix.from_dense(np.array([[1.0, 0.0], [0.0, 2.0]]))
    b = np.array([[1.0, np.inf, 1.0, 1.0, 1.0], [np.nan, 1.0, 1.0, 1.0, 1.0]])
    result = sparse_mm(a, b)  # panel path (5 columns)
    np.testing.assert_array_equal(result, sp.csr_array(a.to_dense()) @ b)
    assert np.isfinite(result[0, 2:]).all() and np.isnan(result[1, 0])
    np.testing.assert_array_equal(sparse_mm(a, b[:, :2]), sp.csr_array(a.to_dense()) @ b[:, :2])


# --- property tests --------------------------------------------------------------------------

KERNEL_DTYPES = st.sampled_from([np.float32, np.float64])
INPUT_DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.int8, np.bool_])


@st.composite
def sparse_dense_pairs(draw):
    """(sparse dense-array A, dense B) with random shapes, densities, dtypes, layouts."""
    m = draw(st.integers(0, 40))
    k = draw(st.integers(0, 40))
    n = draw(st.integers(0, 40))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = np.where(rng.random((m, k)) < density, rng.uniform(-2, 2, (m, k)), 0.0)
    a = a.astype(draw(KERNEL_DTYPES))
    b = rng.uniform(-2, 2, (k, n)).astype(draw(INPUT_DTYPES))
    layout = draw(st.sampled_from(["c", "f", "reversed", "strided"]))
    if layout == "f":
        b = np.asfortranarray(b)
    elif layout == "reversed":
        b = np.ascontiguousarray(b[::-1, ::-1])[::-1, ::-1]
    elif layout == "strided":
        b = np.repeat(np.repeat(b, 2, axis=0), 3, axis=1)[::2, ::3]
    return a, b


@settings(max_examples=60)
@given(pair=sparse_dense_pairs(), isa_index=st.integers(0, 2), threads=st.integers(1, 3))
def test_property_sparse_mm_matches_scipy(pair, isa_index, threads, check_sparse_mm):
    a_dense, b = pair
    isas = sparsegemm.available_isas()
    with sparsegemm.use_isa(isas[isa_index % len(isas)]):
        for a in (CSRMatrix.from_dense(a_dense), sp.csr_array(a_dense)):
            result = sparse_mm(a, b, num_threads=threads)
            assert result.dtype == np.result_type(a_dense.dtype, b.dtype, np.float32)
            check_sparse_mm(result, a_dense, b)


@settings(max_examples=60)
@given(pair=sparse_dense_pairs(), batch=st.lists(st.integers(0, 4), max_size=2),
       with_bias=st.booleans())
def test_property_linear_matches_numpy(pair, batch, with_bias, check_linear):
    w_dense, b = pair
    x = np.broadcast_to(b.T, tuple(batch) + b.T.shape)
    bias = np.linspace(-1, 1, w_dense.shape[0]).astype(w_dense.dtype) if with_bias else None
    result = linear(x, CSRMatrix.from_dense(w_dense), bias)
    assert result.shape == x.shape[:-1] + (w_dense.shape[0],)
    check_linear(result, x, w_dense, bias)


@settings(max_examples=40)
@given(dense=hnp.arrays(KERNEL_DTYPES, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0,
                                                        max_side=12),
                        elements=st.sampled_from([0.0, 0.0, 1.0, -2.5, 0.125, np.nan, np.inf])),
       threshold=st.sampled_from([0.0, 0.5, 2.0]))
def test_property_from_dense_matches_scipy(dense, threshold):
    matrix = CSRMatrix.from_dense(dense, threshold)
    kept = np.where(np.isnan(dense) | (np.abs(dense) > threshold), dense, 0)
    expected = sp.csr_array(kept)
    np.testing.assert_array_equal(matrix.indptr, expected.indptr)
    np.testing.assert_array_equal(matrix.indices, expected.indices)
    np.testing.assert_array_equal(matrix.data, expected.data)
    back = matrix.to_scipy()
    np.testing.assert_array_equal(back.toarray(), kept)
