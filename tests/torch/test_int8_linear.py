"""SparseLinearInt8 and sparsify(weight_dtype="int8"): int8 bitmap weights behind torch."""

import warnings

import numpy as np
import pytest

import sparsegemm

torch = pytest.importorskip("torch")
from torch.nn.utils import prune as torch_prune  # noqa: E402

from sparsegemm.torch import SparseLinear, SparseLinearInt8, clear_cache, sparsify  # noqa: E402
from torch import nn  # noqa: E402


def _pruned_linear(in_features=96, out_features=40, sparsity=0.7, bias=True, seed=0):
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        linear.weight.mul_(torch.rand_like(linear.weight) >= sparsity)
    return linear


def _relative_error(actual, expected):
    return (torch.linalg.norm(actual.double() - expected.double())
            / torch.linalg.norm(expected.double())).item()


@pytest.mark.parametrize("bias", [True, False])
def test_matches_the_numpy_int8_kernel_exactly_and_the_float_layer_closely(bias):
    linear = _pruned_linear(bias=bias)
    module = SparseLinearInt8.from_dense(linear)
    x = torch.randn(3, 5, 96)
    with torch.no_grad():
        y = module(x)
        expected = linear(x)
    matrix = sparsegemm.Int8BitmapMatrix.from_dense(linear.weight.detach().numpy())
    reference = matrix.linear(x.numpy(), None if linear.bias is None
                              else linear.bias.detach().numpy())
    np.testing.assert_array_equal(y.numpy(), reference)
    assert y.shape == (3, 5, 40) and y.dtype == torch.float32
    assert _relative_error(y, expected) < 0.02
    assert module.nnz == int(linear.weight.count_nonzero())
    assert module.values.dtype == torch.int8 and module.scales.dtype == torch.float32
    torch.testing.assert_close(module.to_dense().weight, torch.from_numpy(matrix.to_dense()))


def test_masks_of_torch_prune_and_the_sparse_linear_entry_point():
    linear = nn.Linear(64, 16)
    torch_prune.l1_unstructured(linear, "weight", amount=0.8)
    module = SparseLinear.from_dense(linear, weight_dtype="int8")
    assert isinstance(module, SparseLinearInt8)
    assert module.nnz == int(linear.weight_mask.sum())
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert _relative_error(module(x), linear(x)) < 0.02


def test_state_dict_holds_the_compact_arrays_and_loads_into_an_empty_module():
    module = SparseLinearInt8.from_dense(_pruned_linear())
    state = module.state_dict()
    assert set(state) == {"bitmap", "values", "scales", "bias"}
    assert state["values"].dtype == torch.int8 and state["values"].numel() == module.nnz
    fresh = SparseLinearInt8(96, 40)
    fresh.load_state_dict(state)
    x = torch.randn(2, 96)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), module(x), rtol=0, atol=0)


def test_an_in_place_edit_of_the_values_is_seen():
    module = SparseLinearInt8.from_dense(_pruned_linear())
    x = torch.randn(2, 96)
    with torch.no_grad():
        before = module(x)
        module.values.mul_(-1)  # bumps the version counter: the cached matrix is rebuilt
        after = module(x)
    torch.testing.assert_close(after - module.bias, -(before - module.bias))
    clear_cache()


def test_inputs_of_other_float_dtypes_and_gradients():
    module = SparseLinearInt8.from_dense(_pruned_linear())
    x = torch.randn(2, 96)
    with torch.no_grad():
        half = module(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="inference-only"):
        module(x.requires_grad_())
    with pytest.raises(TypeError, match="floating point"):
        module(torch.ones(2, 96, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        module(torch.randn(2, 95))


def test_compiles_without_graph_breaks():
    module = SparseLinearInt8.from_dense(_pruned_linear())
    x = torch.randn(4, 96)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x))


def test_sparsify_with_int8_weights_converts_every_linear_and_fuses_relu():
    torch.manual_seed(0)
    model = nn.Sequential(_pruned_linear(32, 64), nn.ReLU(), _pruned_linear(64, 8, seed=1)).eval()
    x = torch.randn(5, 32)
    with torch.no_grad():
        expected = model(x)
        sparsify(model, weight_dtype="int8")
        y = model(x)
    assert isinstance(model[0], SparseLinearInt8) and isinstance(model[2], SparseLinearInt8)
    assert isinstance(model[1], nn.Identity) and model[0].activation == "relu"
    assert [layer.format for layer in model.sparsegemm_report] == ["int8-bitmap"] * 2
    assert _relative_error(y, expected) < 0.03
    with pytest.raises(ValueError, match="weight_dtype"):
        sparsify(nn.Sequential(nn.Linear(4, 4)), weight_dtype="int4")


@pytest.mark.slow  # trains a digits MLP (seconds) and converts it both ways
def test_digits_accuracy_matches_torch_quantize_dynamic(benchmark_script):
    bench = benchmark_script("prune_digits")
    data = bench.load_data()
    x_test, y_test = data[2], data[3]
    model = bench.train_dense(bench.make_mlp, data, epochs=30).eval()
    for module in model:
        if isinstance(module, nn.Linear):
            torch_prune.l1_unstructured(module, "weight", amount=0.7)
            torch_prune.remove(module, "weight")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dynamic = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    import copy

    ours = sparsify(copy.deepcopy(model), weight_dtype="int8")
    accuracy_float = bench.accuracy(model, x_test, y_test)
    accuracy_dynamic = bench.accuracy(dynamic, x_test, y_test)
    accuracy_ours = bench.accuracy(ours, x_test, y_test)
    assert accuracy_float > 90  # percent
    assert abs(accuracy_ours - accuracy_dynamic) <= 0.5  # points, the floor
