"""bfloat16 weights in torch: the rounding, and SparseLinear of a bfloat16 module in every
format, whose forward runs the bfloat16-valued kernel on the stored values
(tests/test_bitmap_bf16.py and tests/test_csr_bsr_bf16.py test the kernels themselves)."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import scipy.sparse as sp

from sparsegemm import BitmapMatrix
from sparsegemm._dtypes import bfloat16_bits
from sparsegemm.torch import SparseLinear
from sparsegemm.torch._cache import values_array

# Every format, BSR in a block shape with its own kernel and in one without.
FORMATS = [("bitmap", None), ("csr", None), ("bsr", (4, 1)), ("bsr", (3, 2))]
FORMAT_IDS = ["bitmap", "csr", "bsr4x1", "bsr3x2"]


def bf16(dense, threshold=0.0):
    return BitmapMatrix.from_dense(dense, threshold, dtype="bfloat16")


def test_rounding_matches_torch_bit_for_bit(rng):
    tiny = np.finfo(np.float32).tiny
    special = np.array([1.0, -1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, 3.4e38,
                        -3.4e38, np.finfo(np.float32).max, np.inf, -np.inf, np.nan, -np.nan,
                        tiny, tiny / 3, -tiny / 7, 1e-45, 65504.0, 0.1, -0.3], np.float32)
    bits = rng.integers(0, 2**32, size=4000, dtype=np.uint64).astype(np.uint32)
    values = np.concatenate([special, bits.view(np.float32)]).reshape(-1, 1)
    a = bf16(values)
    expected = torch.from_numpy(values.ravel()).to(torch.bfloat16).view(torch.int16).numpy()
    expected = expected.view(np.uint16)
    # Entries that round to zero (1e-45, say) are not stored: compare stored ones.
    stored = np.unpackbits(a.bits.view(np.uint8), axis=1, bitorder="little")[:, 0].astype(bool)
    np.testing.assert_array_equal(stored, (expected & 0x7FFF) != 0)
    # NaN stays NaN; its pattern is not compared: torch's vectorised conversion
    # gives 0xFFFF and its scalar one 0x7FC0 (ours, always).
    nan = np.isnan(values.ravel()[stored])
    assert (a.data[nan] == 0x7FC0).all()
    np.testing.assert_array_equal(a.data[~nan], expected[stored][~nan])
    # The numpy rounding (from_scipy, (data, bits)) agrees with the C++ one;
    # from_scipy keeps what rounds to zero, as it keeps explicit zeros.
    rounded = bfloat16_bits(values.ravel())
    np.testing.assert_array_equal(rounded[stored], a.data)
    from_scipy = BitmapMatrix.from_scipy(sp.csr_array(values), dtype="bfloat16")
    np.testing.assert_array_equal(from_scipy.data, rounded[values.ravel() != 0])


def _pruned_bf16_linear(in_features, out_features, *, bias=True, density=0.5, seed=0):
    torch.manual_seed(seed)
    linear = torch.nn.Linear(in_features, out_features, bias=bias).to(torch.bfloat16)
    with torch.no_grad():
        linear.weight.mul_(torch.rand(out_features, in_features) < density)
    return linear


@pytest.mark.parametrize(("fmt", "blocksize"), FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("shape", [(1,), (5,), (2, 3), (17,), (70,), ()])
@pytest.mark.parametrize("bias", [True, False])
def test_torch_bf16_module_within_bf16_rounding_of_dense(isa, fmt, blocksize, shape, bias):
    dense = _pruned_bf16_linear(130, 29, bias=bias)
    sparse = SparseLinear.from_dense(dense, format=fmt, blocksize=blocksize)
    assert sparse.values.dtype == torch.bfloat16
    if fmt != "bsr":
        assert sparse.nnz == int((dense.weight != 0).sum())
    x = torch.randn(*shape, 130).to(torch.bfloat16)
    y = sparse(x)
    assert y.dtype == torch.bfloat16 and y.shape == dense(x).shape
    # Against the exact product of the same bfloat16 operands: the float32 sum
    # rounded once to bfloat16 (half an ulp, 2**-9 relative), as the dense module.
    w64 = dense.weight.double()
    exact = x.double() @ w64.T + (dense.bias.double() if bias else 0)
    magnitude = x.double().abs() @ w64.abs().T + (dense.bias.double().abs() if bias else 0)
    slack = 140 * 2**-24 * magnitude + 1e-30
    for result in (y, dense(x)):
        assert ((result.double() - exact).abs() <= 2**-8 * exact.abs() + slack).all()


@pytest.mark.parametrize(("fmt", "blocksize"), FORMATS, ids=FORMAT_IDS)
def test_torch_bf16_values_reach_the_kernel_without_a_copy(fmt, blocksize):
    sparse = SparseLinear.from_dense(_pruned_bf16_linear(64, 8), format=fmt, blocksize=blocksize)
    array = values_array(sparse.values)
    assert array.dtype == np.uint16 and array.ctypes.data == sparse.values.data_ptr()
    before = sparse(torch.ones(1, 64, dtype=torch.bfloat16))
    with torch.no_grad():
        sparse.values.mul_(2)  # read live, as the other dtypes
    after = sparse(torch.ones(1, 64, dtype=torch.bfloat16))
    torch.testing.assert_close(after.float() - sparse.bias.float(),
                               2 * (before.float() - sparse.bias.float()), rtol=2**-7, atol=1e-2)


@pytest.mark.parametrize(("fmt", "blocksize"), FORMATS, ids=FORMAT_IDS)
def test_torch_bf16_autograd_matches_dense(fmt, blocksize):
    dense = _pruned_bf16_linear(70, 9)
    sparse = SparseLinear.from_dense(dense, format=fmt, blocksize=blocksize)
    x = torch.randn(4, 70).to(torch.bfloat16).requires_grad_()
    x_dense = x.detach().clone().requires_grad_()
    sparse(x).float().pow(2).sum().backward()
    dense(x_dense).float().pow(2).sum().backward()
    assert sparse.values.grad.dtype == torch.bfloat16
    tolerance = {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(x.grad, x_dense.grad, **tolerance)
    torch.testing.assert_close(sparse.bias.grad, dense.bias.grad, **tolerance)
    # The gradient of every stored entry (zeros inside BSR blocks included) is the dense one.
    with torch.no_grad():
        stored, grad = copy.deepcopy(sparse), copy.deepcopy(sparse)
        stored.values.fill_(1)
        grad.values.copy_(sparse.values.grad)
    where = stored.dense_weight() != 0
    torch.testing.assert_close(grad.dense_weight()[where], dense.weight.grad[where], **tolerance)


def test_torch_float16_bitmap_module_computes_in_float32():
    dense = _pruned_bf16_linear(40, 6).to(torch.float16)
    sparse = SparseLinear.from_dense(dense, format="bitmap")
    x = torch.randn(3, 40).to(torch.float16)
    expected = torch.nn.functional.linear(x.float(), dense.weight.float(), dense.bias.float())
    torch.testing.assert_close(sparse(x), expected.to(torch.float16))


@pytest.mark.parametrize(("fmt", "blocksize"), FORMATS, ids=FORMAT_IDS)
def test_float32_module_with_bfloat16_weights(fmt, blocksize):
    dense = _pruned_bf16_linear(90, 13).float()
    dense.weight.data += 1e-3 * (dense.weight != 0)  # not bfloat16 numbers any more
    sparse = SparseLinear.from_dense(dense, format=fmt, blocksize=blocksize,
                                     weight_dtype=torch.bfloat16)
    assert sparse.values.dtype == torch.bfloat16 and sparse.bias.dtype == torch.float32
    rounded = dense.weight.to(torch.bfloat16).float()
    x = torch.randn(3, 90, requires_grad=True)
    y = sparse(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.nn.functional.linear(x, rounded, dense.bias),
                               rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert x.grad.dtype == torch.float32 and sparse.values.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x.grad, rounded.sum(0).expand(3, -1), rtol=1e-5, atol=1e-5)
    compiled = torch.compile(sparse, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), y)
    with pytest.raises(ValueError, match="float32 module"):
        SparseLinear.from_dense(dense.double(), format=fmt, blocksize=blocksize,
                                weight_dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="weight_dtype"):
        SparseLinear.from_dense(dense, format=fmt, blocksize=blocksize, weight_dtype=torch.float16)


def _pruned_mlp(prune):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(),
                                torch.nn.Linear(96, 32)).eval()
    for layer in (model[0], model[2]):
        prune(layer, 0.8)
    return model


@pytest.mark.parametrize("fmt", ["csr", "bsr", "bitmap", "auto"])
def test_sparsify_stores_bfloat16_values_of_a_float32_model(prune, fmt):
    from sparsegemm.torch import AutoSparseLinear, sparsify

    model = _pruned_mlp(prune)
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for layer in (rounded[0], rounded[2]):
            layer.weight.copy_(layer.weight.to(torch.bfloat16).float())
    x = torch.randn(5, 64)
    sparse = sparsify(copy.deepcopy(model), format=fmt, weight_dtype="bfloat16",
                      example_inputs=x)
    with torch.no_grad():
        y = sparse(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, rounded(x), rtol=1e-5, atol=1e-5)
    layers = [sparse[0], sparse[2]]
    stored = [m for layer in layers for m in (
        layer.variants.values() if isinstance(layer, AutoSparseLinear) else [layer])]
    assert stored and all(isinstance(m, SparseLinear) for m in stored)
    assert all(m.values.dtype == torch.bfloat16 and m.bias.dtype == torch.float32
               for m in stored)
    assert all("bfloat16 values" in row.note for row in sparse.sparsegemm_report.converted)


@pytest.mark.parametrize("fmt", ["csr", "bsr", "bitmap"])
def test_sparsify_a_bfloat16_model(prune, fmt):
    from sparsegemm.torch import sparsify

    model = _pruned_mlp(prune).to(torch.bfloat16)
    x = torch.randn(3, 64).to(torch.bfloat16)
    expected = model(x)
    sparse = sparsify(copy.deepcopy(model), format=fmt)
    assert all(isinstance(sparse[i], SparseLinear) and sparse[i].values.dtype == torch.bfloat16
               for i in (0, 2))
    with torch.no_grad():
        y = sparse(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected.float(), rtol=2e-2, atol=2e-2)


def test_sparsify_rejects_an_unknown_weight_dtype():
    from sparsegemm.torch import sparsify

    with pytest.raises(ValueError, match="weight_dtype"):
        sparsify(torch.nn.Sequential(torch.nn.Linear(4, 4)), weight_dtype="float16")


def test_auto_format_of_a_bfloat16_weight_plans_in_bfloat16(monkeypatch):
    import sparsegemm

    requested = []
    real_plan = sparsegemm.plan

    def recording_plan(*args, **kwargs):
        requested.append(kwargs.get("dtype"))
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(sparsegemm, "plan", recording_plan)
    SparseLinear.from_dense(_pruned_bf16_linear(64, 32, density=0.2), format="auto",
                            batch_hint=16)
    SparseLinear.from_dense(_pruned_bf16_linear(64, 32, density=0.2).float(), format="auto",
                            batch_hint=16)
    assert requested == ["bfloat16", None]
