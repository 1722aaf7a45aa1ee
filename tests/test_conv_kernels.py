"""The direct sparse convolution (sparsegemm.conv2d) against a float64 numpy reference on every
ISA."""

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp

import sparsegemm

ISAS = sparsegemm.available_isas()
# Output widths below, at and around the vector widths (4, 8, 16 lanes) and chunk edges.
# From 33 outputs wide at density below 0.025 the direct kernel runs, otherwise
# panels: shifted row panels where rows fill them and a weight column holds up
# to 16 entries, im2col panels elsewhere (drivers/conv_driver.cpp).
WIDTHS = [1, 7, 8, 9, 15, 16, 17, 32, 33, 56]
KERNELS = [(1, 1), (3, 3), (5, 5), (1, 3)]


def reference_conv2d(x, weight, stride=(1, 1), padding=(0, 0), dilation=(1, 1), bias=None):
    """F.conv2d (groups=1, zero padding) in float64 with numpy: one strided slice per tap."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, _, h, w = x.shape
    cout, _, kh, kw = weight.shape
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((n, cout, out_h, out_w))
    for i, j in itertools.product(range(kh), range(kw)):
        window = padded[:, :, i * dh: i * dh + sh * (out_h - 1) + 1: sh,
                        j * dw: j * dw + sw * (out_w - 1) + 1: sw]
        out += np.einsum("oc,nchw->nohw", weight[:, :, i, j], window)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return out


def sparse_weight(rng, cout, cin, kh, kw, density, dtype=np.float64):
    weight = rng.standard_normal((cout, cin, kh, kw))
    weight[rng.random(weight.shape) >= density] = 0
    return weight.astype(dtype)


def tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def check(x, weight, kernel_size, dtype=np.float64, bias=None, **geometry):
    matrix = sparsegemm.CSRMatrix.from_dense(weight.reshape(weight.shape[0], -1), dtype=dtype)
    bias = None if bias is None else np.asarray(bias, dtype=dtype)
    got = sparsegemm.conv2d(x.astype(dtype), matrix, kernel_size, bias=bias, **geometry)
    pairs = {k: (v, v) if isinstance(v, int) else v for k, v in geometry.items()
             if k in ("stride", "padding", "dilation")}
    # The reference sees the operands as rounded to dtype.
    expected = reference_conv2d(x.astype(dtype), weight.astype(dtype), bias=bias, **pairs)
    assert got.dtype == dtype
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **tolerance(dtype),
                               err_msg=f"kernel {kernel_size}, geometry {geometry}, x {x.shape}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("out_width", WIDTHS)
@pytest.mark.parametrize("density", [0.02, 0.05, 0.5])
def test_stride1_geometries_match_reference(isa, dtype, out_width, density):
    rng = np.random.default_rng(out_width)
    with sparsegemm.use_isa(isa):
        for (kh, kw), pad, dil in itertools.product(KERNELS, (0, 1, 2), (1, 2)):
            # Choose the input width that gives out_width outputs for this geometry.
            in_w = out_width - 2 * pad + dil * (kw - 1)
            in_h = 6 - 2 * pad + dil * (kh - 1)
            if in_w < 1 or in_h < 1:
                continue
            batch = 1 if (kh + pad + dil) % 2 else 3
            weight = sparse_weight(rng, 5, 3, kh, kw, density=density)
            x = rng.standard_normal((batch, 3, in_h, in_w))
            bias = rng.standard_normal(5)
            check(x, weight, (kh, kw), dtype, bias=bias if pad != 1 else None,
                  padding=pad, dilation=dil)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("stride", [2, (1, 3), (2, 1), (3, 2)])
def test_strided_convolutions(isa, stride):
    rng = np.random.default_rng(1)
    with sparsegemm.use_isa(isa):
        for width, (kh, kw), pad, dil in itertools.product((9, 17, 40), KERNELS, (0, 1, 2), (1, 2)):
            weight = sparse_weight(rng, 4, 3, kh, kw, density=0.6)
            x = rng.standard_normal((2, 3, 11, width))
            check(x, weight, (kh, kw), padding=pad, dilation=dil, stride=stride)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_zero_and_dense_weights(isa, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 10, 17))
    bias = rng.standard_normal(6)
    with sparsegemm.use_isa(isa):
        with_empty_channels = sparse_weight(rng, 6, 4, 3, 3, density=0.5)
        with_empty_channels[[0, 3, 5]] = 0  # first, middle and last output channels
        check(x, with_empty_channels, 3, dtype, bias=bias, padding=1)
        check(x, np.zeros((6, 4, 3, 3)), 3, dtype, bias=bias, padding=1)  # nnz == 0: bias only
        check(x, np.zeros((6, 4, 3, 3)), 3, dtype, padding=1)  # all zero output
        check(x, sparse_weight(rng, 6, 4, 3, 3, density=1.0), 3, dtype, bias=bias, padding=1)


def test_empty_batch_channels_and_outputs():
    bias = np.arange(4.0)
    no_inputs = sparsegemm.conv2d(np.ones((2, 0, 5, 5)),
                                  sparsegemm.CSRMatrix.from_dense(np.zeros((4, 0))), 3, bias=bias)
    np.testing.assert_array_equal(no_inputs,
                                  np.broadcast_to(bias[None, :, None, None], (2, 4, 3, 3)))
    weight = sparsegemm.CSRMatrix.from_dense(np.ones((4, 18)))
    assert sparsegemm.conv2d(np.ones((0, 2, 5, 5)), weight, 3).shape == (0, 4, 3, 3)
    no_outputs = sparsegemm.CSRMatrix.from_dense(np.ones((0, 18)))
    assert sparsegemm.conv2d(np.ones((1, 2, 5, 5)), no_outputs, 3).shape == (1, 0, 3, 3)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, stride, dilation, out_width", [
    ((3, 3), 1, 1, 60),  # two panels a row on AVX2 floats, the second short
    ((3, 5), (2, 1), (1, 2), 64),
    ((5, 3), 1, (2, 1), 30),
    ((2, 2), (3, 1), 1, 16),
])
def test_shifted_row_panels(isa, dtype, kernel, stride, dilation, out_width):
    """Stride 1 along rows, rows that fill their panels and few entries per weight column
    (here 6 channels out at density 0.4): the panels hold one input row per (channel,
    kernel row), read at each kernel column's shift (drivers/conv_driver.cpp)."""
    rng = np.random.default_rng(out_width)
    (kh, kw), dw = kernel, dilation if isinstance(dilation, int) else dilation[1]
    in_w = out_width - 2 + dw * (kw - 1)
    weight = sparse_weight(rng, 6, 5, kh, kw, density=0.4)
    x = rng.standard_normal((2, 5, 9, in_w))[:, :, :, ::-1]  # read through negative strides
    with sparsegemm.use_isa(isa):
        check(x, weight, kernel, dtype, bias=rng.standard_normal(6), padding=1, stride=stride,
              dilation=dilation)


def _activate(values, activation):
    if activation == "relu":
        return np.maximum(values, 0)
    erf = np.vectorize(math.erf)
    if activation == "gelu":
        return 0.5 * values * (1 + erf(values / math.sqrt(2)))
    inner = math.sqrt(2 / math.pi) * (values + 0.044715 * values**3)
    return 0.5 * values * (1 + np.tanh(inner))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("density, stride, width", [
    (0.02, 1, 40),  # the direct kernel, then a pass
    (0.1, 1, 30),   # shifted row panels: activated as each panel is written
    (0.6, 2, 17),   # im2col panels
])
def test_activation_on_every_path(isa, activation, density, stride, width):
    rng = np.random.default_rng(7)
    weight = sparse_weight(rng, 8, 6, 3, 3, density=density)
    x = rng.standard_normal((2, 6, 9, width))
    bias = rng.standard_normal(8)
    matrix = sparsegemm.CSRMatrix.from_dense(weight.reshape(8, -1))
    with sparsegemm.use_isa(isa):
        got = sparsegemm.conv2d(x, matrix, 3, bias=bias, padding=1, stride=stride,
                                activation=activation)
    plain = reference_conv2d(x, weight, stride=(stride, stride), padding=(1, 1), bias=bias)
    np.testing.assert_allclose(got, _activate(plain, activation), rtol=1e-6, atol=1e-6)


def test_unknown_activation_raises():
    matrix = sparsegemm.CSRMatrix.from_dense(np.ones((2, 9)))
    with pytest.raises(ValueError, match="activation must be None or one of"):
        sparsegemm.conv2d(np.ones((1, 1, 4, 4)), matrix, 3, activation="tanh")


# The direct kernel (2% of 64 x 64 x 3 x 3), shifted row panels (10%: 6.4 entries per weight
# column) and im2col panels (30%: 19).
@pytest.mark.parametrize("density", [0.02, 0.1, 0.3])
def test_resnet_3x3_layer_shape(density):
    rng = np.random.default_rng(3)
    weight = sparse_weight(rng, 64, 64, 3, 3, density=density, dtype=np.float32)
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    check(x, weight, 3, np.float32, padding=1)


def test_threads_agree_and_inputs_are_read_in_place():
    rng = np.random.default_rng(4)
    weight = sparsegemm.CSRMatrix.from_dense(sparse_weight(rng, 9, 6, 3, 3, 0.3).reshape(9, -1))
    base = rng.standard_normal((2, 12, 20, 23))
    x = base[:, ::2, 1:, :]  # strided channels and rows: passed without a copy
    one = sparsegemm.conv2d(x, weight, 3, padding=1, num_threads=1)
    two = sparsegemm.conv2d(x, weight, 3, padding=1, num_threads=2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, reference_conv2d(x, weight.to_dense().reshape(9, 6, 3, 3),
                                                     padding=(1, 1)), rtol=1e-12, atol=1e-12)
    fortran = np.asfortranarray(x)  # last dimension not contiguous: copied
    np.testing.assert_array_equal(sparsegemm.conv2d(fortran, weight, 3, padding=1), one)


def test_scipy_weight_and_dtype_promotion():
    rng = np.random.default_rng(5)
    dense = sparse_weight(rng, 4, 2, 3, 3, 0.5)
    x32 = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    got = sparsegemm.conv2d(x32, sp.csr_array(dense.reshape(4, -1).astype(np.float32)), 3)
    assert got.dtype == np.float32
    got64 = sparsegemm.conv2d(x32, sp.csr_array(dense.reshape(4, -1)), 3)
    assert got64.dtype == np.float64
    np.testing.assert_allclose(got64, reference_conv2d(x32, dense), rtol=1e-6, atol=1e-6)


def test_replacement_values_in_core():
    # The torch layer passes its live values to the core instead of rebuilding the matrix.
    rng = np.random.default_rng(6)
    dense = sparse_weight(rng, 3, 2, 3, 3, 0.5)
    matrix = sparsegemm.CSRMatrix.from_dense(dense.reshape(3, -1))
    values = rng.standard_normal(matrix.nnz)
    x = rng.standard_normal((1, 2, 7, 9))
    out = np.empty((1, 3, 7, 9))
    sparsegemm._core.csr_conv2d(matrix._handle, x, out, (3, 3), (1, 1), (1, 1), (1, 1), None, 1,
                                values)
    replaced = matrix.with_data(values).to_dense().reshape(3, 2, 3, 3)
    np.testing.assert_allclose(out, reference_conv2d(x, replaced, padding=(1, 1)), rtol=1e-12)
    with pytest.raises(ValueError, match="values must have 24 entries"):
        sparsegemm._core.csr_conv2d(matrix._handle, x, out, (3, 3), (1, 1), (1, 1), (1, 1), None, 1,
                                    values[:-1])


def test_bad_arguments_raise():
    weight = sparsegemm.CSRMatrix.from_dense(np.ones((4, 18)))
    x = np.ones((1, 2, 5, 5))
    with pytest.raises(ValueError, match="Cin\\*KH\\*KW"):
        sparsegemm.conv2d(x, weight, 2)
    with pytest.raises(ValueError, match="4-dimensional"):
        sparsegemm.conv2d(x[0], weight, 3)
    with pytest.raises(ValueError, match="larger than the padded input"):
        sparsegemm.conv2d(x, weight, 3, dilation=3)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        sparsegemm.conv2d(x, weight, 3, stride=0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        sparsegemm.conv2d(x, weight, 3, padding=(-1, 0))
    with pytest.raises(ValueError, match="kernel_size must be an int or a pair"):
        sparsegemm.conv2d(x, weight, (3, 3, 1))
    with pytest.raises(ValueError, match="bias must have shape"):
        sparsegemm.conv2d(x, weight, 3, bias=np.ones(3))
    with pytest.raises(TypeError, match="CSRMatrix.from_dense"):
        sparsegemm.conv2d(x, np.ones((4, 18)), 3)
    # The C++ driver checks geometry itself (std::invalid_argument -> ValueError).
    out = np.empty((1, 4, 3, 3))
    with pytest.raises(ValueError, match="conv2d: padding must be non-negative"):
        sparsegemm._core.csr_conv2d(weight._handle, x, out, (3, 3), (1, 1), (-1, 0), (1, 1))
    with pytest.raises(ValueError, match="conv2d: the weight has 18 columns"):
        sparsegemm._core.csr_conv2d(weight._handle, x, out, (2, 2), (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="out must have shape"):
        sparsegemm._core.csr_conv2d(weight._handle, x, np.empty((1, 4, 5, 5)), (3, 3), (1, 1),
                                    (0, 0), (1, 1))
