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


@pytest.mark.parametrize("kernel", ["bitmap", "auto"])
def test_compiles_without_graph_breaks(kernel):
    # Compiled, every kernel choice runs the bitmap kernel's custom op (and never times).
    module = SparseLinearInt8.from_dense(_pruned_linear(), kernel=kernel)
    x = torch.randn(4, 96)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), SparseLinearInt8.from_dense(_pruned_linear())(x))
    assert not module.decisions


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


# --- which product runs: the bitmap kernel, FBGEMM's dense int8 GEMM, or the faster ----------

def _dense_int8_available():
    return any(engine in torch.backends.quantized.supported_engines
               for engine in ("x86", "fbgemm", "qnnpack"))


needs_dense_int8 = pytest.mark.skipif(not _dense_int8_available(),
                                      reason="this torch has no quantized engine")


@pytest.fixture
def int8_timings(monkeypatch):
    """Replaces the timing of the two int8 products: set ``times`` to {'bitmap': s,
    'dense': s}; ``calls`` records the row counts timed."""
    from sparsegemm.torch import quantized

    state = {"times": {"bitmap": 1.0, "dense": 2.0}, "calls": []}

    def fake(runners, repeats, rounds, drop_slower_than=float("inf")):
        assert set(runners) == {"bitmap", "dense"}
        state["calls"].append(len(runners["bitmap"]()))  # rows of the timed product
        return dict(state["times"])

    monkeypatch.setattr(quantized, "_time_candidates", fake)
    return state


def test_the_eager_path_matches_the_custom_op_exactly():
    linear = _pruned_linear()
    module = SparseLinearInt8.from_dense(linear)
    for x in (torch.randn(7, 96), torch.randn(3, 4, 96), torch.randn(96, 7).T,
              torch.randn(96)):
        with torch.inference_mode():
            direct = module(x)
            through_op = torch.ops.sparsegemm.int8_bitmap_linear(
                x, module.bitmap, module.values, module.scales, 96, module.bias)
        assert direct.shape == through_op.shape
        torch.testing.assert_close(direct, through_op, rtol=0, atol=0)


@needs_dense_int8
@pytest.mark.parametrize("bias", [True, False])
def test_the_dense_int8_product_holds_the_same_integers(bias):
    linear = _pruned_linear(bias=bias, sparsity=0.5)
    with torch.no_grad():
        linear.weight[3] = 0  # an all-zero row (scale 0 in the bitmap's arrays)
    bitmap = SparseLinearInt8.from_dense(linear)
    dense = SparseLinearInt8.from_dense(linear, kernel="dense")
    x = torch.randn(2, 6, 96)
    with torch.inference_mode():
        y_dense, y_bitmap, expected = dense(x), bitmap(x), linear(x)
    assert y_dense.shape == (2, 6, 40)
    assert _relative_error(y_dense, expected) < 0.03
    assert _relative_error(y_dense, y_bitmap) < 0.03
    packed = dense._operands.packed(dense.bias)
    weight, packed_bias = torch.ops.quantized.linear_unpack(packed)
    integers = torch.round(bitmap.dense_weight()
                           / bitmap.scales.clamp(min=1e-30)[:, None]).to(torch.int8)
    torch.testing.assert_close(weight.int_repr(), integers, rtol=0, atol=0)
    assert (packed_bias is None) == (not bias)
    assert set(dense.state_dict()) == set(bitmap.state_dict())  # the packed copy is a cache


@needs_dense_int8
def test_auto_times_each_row_bucket_once_and_runs_the_faster(int8_timings):
    module = SparseLinearInt8.from_dense(_pruned_linear(), kernel="auto")
    x8, x1 = torch.randn(8, 96), torch.randn(1, 96)
    int8_timings["times"] = {"bitmap": 2.0, "dense": 1.0}
    with torch.inference_mode():
        y8 = module(x8)
        module(torch.randn(7, 96))  # bucket 8 again: not timed
        int8_timings["times"] = {"bitmap": 1.0, "dense": 3.0}
        y1 = module(x1)
    assert int8_timings["calls"] == [8, 1]
    assert {bucket: d.kernel for bucket, d in module.decisions.items()} == {8: "dense", 1: "bitmap"}
    reference = SparseLinearInt8.from_dense(_pruned_linear())
    dense = SparseLinearInt8.from_dense(_pruned_linear(), kernel="dense")
    with torch.inference_mode():
        torch.testing.assert_close(y8, dense(x8), rtol=0, atol=0)
        torch.testing.assert_close(y1, reference(x1), rtol=0, atol=0)
    text = module.describe()
    assert "rows 1: bitmap, 3.00x dense int8" in text
    assert "rows 8: dense int8 (FBGEMM), 2.00x" in text


@needs_dense_int8
def test_a_frozen_module_times_nothing_and_runs_its_nearest_bucket(int8_timings):
    model = nn.Sequential(SparseLinearInt8.from_dense(_pruned_linear(), kernel="auto"))
    module = model[0]
    int8_timings["times"] = {"bitmap": 2.0, "dense": 1.0}
    with torch.inference_mode():
        module(torch.randn(64, 96))
    sparsegemm.torch.freeze(model)
    assert module.frozen and model[0] is module
    with torch.inference_mode():
        y = module(torch.randn(16, 96))  # nearest decided bucket: 64, dense
    assert int8_timings["calls"] == [64] and set(module.decisions) == {64}
    assert y.shape == (16, 40) and "(frozen)" in module.describe()
    never_ran = SparseLinearInt8.from_dense(_pruned_linear(), kernel="auto")
    never_ran.frozen = True
    x = torch.randn(3, 96)
    with torch.inference_mode():
        torch.testing.assert_close(never_ran(x), SparseLinearInt8.from_dense(_pruned_linear())(x),
                                   rtol=0, atol=0)


@needs_dense_int8
def test_sparsify_int8_decides_at_the_rows_it_is_told(int8_timings):
    model = nn.Sequential(_pruned_linear(32, 64), nn.ReLU(), _pruned_linear(64, 8, seed=1)).eval()
    int8_timings["times"] = {"bitmap": 3.0, "dense": 1.0}
    sparsify(model, weight_dtype="int8", batch_hint=32)
    assert int8_timings["calls"] == [32, 32]
    assert all(model[i].kernel == "auto" and model[i].decisions[32].kernel == "dense"
               for i in (0, 2))
    report = str(model.sparsegemm_report)
    assert "rows 32: dense int8 (FBGEMM), 3.00x the bitmap kernel" in report
    x = torch.randn(5, 32)
    with torch.inference_mode():
        model(x)  # bucket 8: timed on this first call
    assert int8_timings["calls"] == [32, 32, 5, 5]
    pinned = sparsify(nn.Sequential(_pruned_linear(32, 64)), weight_dtype="int8", format="bitmap")
    with torch.inference_mode():
        pinned(x)
    assert pinned[0].kernel == "bitmap" and not pinned[0].decisions
    assert int8_timings["calls"] == [32, 32, 5, 5]


@needs_dense_int8
def test_copies_and_pickles_drop_the_cached_products():
    import copy
    import pickle

    module = SparseLinearInt8.from_dense(_pruned_linear(), kernel="dense")
    x = torch.randn(4, 96)
    with torch.inference_mode():
        expected = module(x)
        for other in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
            torch.testing.assert_close(other(x), expected, rtol=0, atol=0)
        module.values.mul_(-1)  # an in-place edit remakes the packed copy too
        flipped = module(x)
    torch.testing.assert_close(flipped - module.bias, -(expected - module.bias),
                               rtol=1e-5, atol=1e-5)
    clear_cache()


def test_an_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel must be one of"):
        SparseLinearInt8.from_dense(_pruned_linear(), kernel="fbgemm")
    with pytest.raises(ValueError, match="kernel must be one of"):
        SparseLinearInt8(8, 8, kernel="dense8")
