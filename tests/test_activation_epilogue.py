"""The activation epilogue of ``linear`` (``activation=``) on every ISA this CPU supports.

The activation kernels are checked against float64 references written here
with ``scipy.special.erfc`` and ``numpy.tanh``; the fused products against the
activation applied to the same kernel's unfused output, on each path of
``driver::linear``: the few-vector kernel (small batches, activation as a pass
over y), the CSR panel kernels (packed and strided, activation on the transpose
that writes y), BSR's transposed panel kernel and the bitmap kernels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import erfc

import sparsegemm
from sparsegemm import BitmapMatrix, BSRMatrix, CSRMatrix, Int8BitmapMatrix, _core, linear

ACTIVATIONS = ["relu", "gelu", "gelu_tanh"]
DTYPES = [np.float32, np.float64]
GATHER_MAX_VECTORS = sparsegemm.kernel_catalogue()["limits"]["gather_max_vectors"]


def reference_activation(y: np.ndarray, activation: str) -> np.ndarray:
    """``activation`` of every entry of ``y``, in float64."""
    y64 = np.asarray(y, dtype=np.float64)
    if activation == "relu":
        return np.where(y64 < 0, 0.0, y64)
    if activation == "gelu":
        return 0.5 * y64 * erfc(-y64 / math.sqrt(2.0))
    u = math.sqrt(2.0 / math.pi) * (y64 + 0.044715 * y64**3)
    return 0.5 * y64 * (1.0 + np.tanh(u))


def assert_activation_close(result: np.ndarray, pre_activation: np.ndarray,
                            activation: str) -> None:
    """``result`` is ``activation(pre_activation)`` within the float32 vector
    approximation (about 5e-7 absolute, as torch's own float32 GELU) or float64
    rounding."""
    expected = reference_activation(pre_activation, activation)
    if result.dtype == np.float32:
        atol, rtol = 1e-6, 4e-7
    else:
        atol, rtol = 1e-15, 1e-13
    np.testing.assert_allclose(result, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 8), (2, 9), (5, 16), (4, 17), (9, 33)])
def test_activation_kernel_matches_reference(isa, dtype, activation, shape, rng):
    values = np.concatenate([np.linspace(-12, 12, 97), rng.standard_normal(200) * 4,
                             [0.0, -0.0, 1e-30, -1e-30, 87.0, -87.0, 300.0, -300.0]])
    y = rng.choice(values, size=shape).astype(dtype)
    original = y.copy()
    _core.apply_activation(y, activation)
    assert_activation_close(y, original, activation)


def _every_float32(low: float, high: float) -> np.ndarray:
    """Every float32 in [low, high] (0 < low < high), as one row."""
    first, last = np.array([low, high], np.float32).view(np.uint32)
    return np.arange(first, last + 1, dtype=np.uint32).view(np.float32).reshape(1, -1)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gelu_kernels_over_every_float_where_their_error_peaks(isa, activation, sign):
    # The float32 GELUs are rational fits, clamped where the CDF is below 6e-8:
    # their rounding error grows with |x| and peaks (at most 0.77 of the tolerance,
    # over every float in +-[1e-4, 8]) between 4 and 5.5. Checking every float of
    # [3.5, 6] (7.3 million) bounds the error, not a sample of it.
    x = sign * _every_float32(3.5, 6.0)
    y = x.copy()
    _core.apply_activation(y, activation)
    assert_activation_close(y, x, activation)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_kernel_only_touches_its_rows_and_columns(isa, activation, rng):
    # A 5 x 11 view with a row stride of 16 floats: the padding must stay as it was.
    storage = rng.standard_normal((5, 16)).astype(np.float32)
    before = storage.copy()
    _core.apply_activation(storage[:, :11], activation)
    np.testing.assert_array_equal(storage[:, 11:], before[:, 11:])
    assert_activation_close(storage[:, :11], before[:, :11], activation)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_kernel_keeps_nan_and_saturates(isa, dtype):
    y = np.array([[np.nan, np.inf, -np.inf, -20.0, 20.0]], dtype=dtype)
    relu, gelu, gelu_tanh = y.copy(), y.copy(), y.copy()
    _core.apply_activation(relu, "relu")
    _core.apply_activation(gelu, "gelu")
    _core.apply_activation(gelu_tanh, "gelu_tanh")
    np.testing.assert_array_equal(relu, [[np.nan, np.inf, 0.0, 0.0, 20.0]])
    for out in (gelu, gelu_tanh):
        assert np.isnan(out[0, 0]) and out[0, 1] == np.inf
        assert np.isnan(out[0, 2]), "GELU(-inf) is NaN (-inf * 0), as in torch"
        assert abs(out[0, 3]) < 1e-30 and out[0, 4] == 20.0


def test_activation_kernel_threads_agree(rng):
    y = rng.standard_normal((300, 400)).astype(np.float32)  # 120k entries: threads split rows
    one, two = y.copy(), y.copy()
    _core.apply_activation(one, "gelu", 1)
    _core.apply_activation(two, "gelu", 2)
    np.testing.assert_array_equal(one, two)


def _weight(kind: str, dense: np.ndarray):
    if kind == "csr":
        return CSRMatrix.from_dense(dense)
    if kind == "bsr":
        return BSRMatrix.from_dense(dense, blocksize=(4, 1))
    return BitmapMatrix.from_dense(dense)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["csr", "bsr", "bitmap"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch", [1, 3, GATHER_MAX_VECTORS, GATHER_MAX_VECTORS + 1, 65, 300])
@pytest.mark.parametrize("density", [0.1, 0.4])
def test_fused_linear_is_activation_of_unfused(isa, dtype, kind, activation, batch, density,
                                               random_sparse, rng):
    # Density 0.1 with many rows takes CSR's packed panels, 0.4 the strided panel kernel.
    weight = _weight(kind, random_sparse((37, 45), density, dtype))
    x = (rng.standard_normal((batch, 45)) * 2).astype(dtype)
    bias = rng.standard_normal(37).astype(dtype)
    for threads in (1, 2):
        unfused = linear(x, weight, bias, num_threads=threads)
        fused = linear(x, weight, bias, activation=activation, num_threads=threads)
        assert fused.dtype == dtype and fused.shape == unfused.shape
        assert_activation_close(fused, unfused, activation)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_linear_with_leading_dimensions_and_int8(activation, random_sparse, rng):
    dense = random_sparse((20, 30), 0.3, np.float32)
    x = rng.standard_normal((2, 3, 30)).astype(np.float32)
    unfused = linear(x, CSRMatrix.from_dense(dense))
    fused = linear(x, CSRMatrix.from_dense(dense), activation=activation)
    assert fused.shape == (2, 3, 20)
    assert_activation_close(fused, unfused, activation)
    quantized = Int8BitmapMatrix.from_dense(dense)
    assert_activation_close(linear(x, quantized, activation=activation), linear(x, quantized),
                            activation)


@given(rows=st.integers(1, 40), cols=st.integers(1, 40), batch=st.integers(0, 70),
       activation=st.sampled_from(ACTIVATIONS), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**31))
def test_fused_linear_random_shapes(rows, cols, batch, activation, dtype, seed):
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((rows, cols)) < 0.3, rng.standard_normal((rows, cols)), 0)
    weight = CSRMatrix.from_dense(dense.astype(dtype))
    x = rng.standard_normal((batch, cols)).astype(dtype)
    assert_activation_close(linear(x, weight, activation=activation), linear(x, weight),
                            activation)


@pytest.mark.parametrize("bad", ["tanh", "RELU", "", 1, ("relu",)])
def test_bad_activation_is_refused_before_any_work(bad, rng):
    weight = CSRMatrix.from_dense(np.eye(4, dtype=np.float32))
    x = rng.standard_normal((2, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="activation must be None or one of"):
        linear(x, weight, activation=bad)
    out = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="activation must be None, 'relu'"):
        _core.csr_linear(weight._handle, x, out, None, 1, None, bad)
    assert not out.any()


def test_apply_activation_refuses_bad_arrays():
    with pytest.raises(TypeError, match="dtype"):
        _core.apply_activation(np.zeros((2, 2), np.int32), "relu")
    with pytest.raises(ValueError, match="2-dimensional"):
        _core.apply_activation(np.zeros(3, np.float32), "relu")
    with pytest.raises(ValueError, match="writeable"):
        frozen = np.zeros((2, 2), np.float32)
        frozen.flags.writeable = False
        _core.apply_activation(frozen, "gelu")
    with pytest.raises(ValueError, match="contiguous rows"):
        _core.apply_activation(np.zeros((4, 4), np.float32)[:, ::2], "gelu")
