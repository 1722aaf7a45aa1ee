"""SparseLinear stored as a bitmap: forward, autograd, state_dict, compile, sparsify."""

import importlib.util

import pytest

torch = pytest.importorskip("torch")
import numpy as np
from torch.nn.utils import prune as torch_prune

import sparsegemm
from sparsegemm.torch import SparseConv2d, SparseLinear, sparsify
from torch import nn


def pruned(in_features, out_features, *, dtype=torch.float32, density=0.5, seed=0):
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features, dtype=dtype)
    keep = torch.rand(out_features, in_features) < density
    with torch.no_grad():
        linear.weight.mul_(keep)
    return linear


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("in_features", [1, 37, 64, 65, 130])
@pytest.mark.parametrize("shape", [(1,), (5,), (2, 3), (17,), ()])
def test_forward_matches_dense(dtype, in_features, shape, tolerance):
    dense = pruned(in_features, 29, dtype=dtype)
    sparse = SparseLinear.from_dense(dense, format="bitmap")
    assert sparse.format == "bitmap" and sparse.blocksize is None
    assert sparse.bitmap.shape == (29, -(-in_features // 64)) and sparse.bitmap.dtype == torch.int64
    assert sparse.nnz == int((dense.weight != 0).sum())
    x = torch.randn(*shape, in_features, dtype=dtype)
    torch.testing.assert_close(sparse(x), dense(x), **tolerance(dtype))
    torch.testing.assert_close(sparse.to_dense().weight, dense.weight)


def test_bitmap_layout_matches_the_numpy_format():
    dense = pruned(100, 9)
    sparse = SparseLinear.from_dense(dense, format="bitmap")
    reference = sparsegemm.BitmapMatrix.from_dense(dense.weight.detach().numpy())
    np.testing.assert_array_equal(sparse.bitmap.numpy().view(np.uint64), reference.bits)
    np.testing.assert_array_equal(sparse.values.detach().numpy(), reference.data)


def test_prune_mask_keeps_masked_in_zeros():
    dense = nn.Linear(20, 6)
    torch_prune.random_unstructured(dense, "weight", amount=0.5)
    with torch.no_grad():
        dense.weight_orig[dense.weight_mask.bool()][0:1].zero_()
        index = dense.weight_mask.nonzero()[0]
        dense.weight_orig[index[0], index[1]] = 0.0  # kept by the mask, value zero
    sparse = SparseLinear.from_dense(dense, format="bitmap")
    assert sparse.nnz == int(dense.weight_mask.sum())
    x = torch.randn(4, 20)
    torch.testing.assert_close(sparse(x), dense(x))


def test_gradcheck_float64():
    dense = pruned(70, 7, dtype=torch.float64)
    sparse = SparseLinear.from_dense(dense, format="bitmap")
    x = torch.randn(3, 2, 70, dtype=torch.float64, requires_grad=True)
    values = sparse.values.detach().clone().requires_grad_()
    bias = sparse.bias.detach().clone().requires_grad_()

    def fn(x, values, bias):
        return torch.ops.sparsegemm.bitmap_linear(x, sparse.bitmap, values, 70, bias)

    assert torch.autograd.gradcheck(fn, (x, values, bias))


def test_gradients_match_dense_at_stored_entries():
    dense = pruned(37, 29, dtype=torch.float64)
    sparse = SparseLinear.from_dense(dense, format="bitmap")
    x = torch.randn(6, 37, dtype=torch.float64, requires_grad=True)
    x_dense = x.detach().clone().requires_grad_()
    sparse(x).pow(2).sum().backward()
    dense(x_dense).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x_dense.grad)
    torch.testing.assert_close(sparse.bias.grad, dense.bias.grad)
    keep = dense.weight != 0
    torch.testing.assert_close(sparse.values.grad, dense.weight.grad[keep])


def test_state_dict_round_trip_and_bad_pattern():
    dense = pruned(90, 11)
    sparse = SparseLinear.from_dense(dense, format="bitmap")
    state = sparse.state_dict()
    assert set(state) == {"bitmap", "values", "bias"}
    fresh = SparseLinear(90, 11, format="bitmap")
    fresh.load_state_dict(state)
    x = torch.randn(2, 90)
    torch.testing.assert_close(fresh(x), sparse(x))
    broken = dict(state)
    broken["values"] = state["values"][:-1]
    with pytest.raises(RuntimeError, match="invalid sparse pattern"):
        SparseLinear(90, 11, format="bitmap").load_state_dict(broken)


def test_values_are_read_live_after_an_optimizer_step():
    dense = pruned(40, 8)
    sparse = SparseLinear.from_dense(dense, format="bitmap")
    x = torch.randn(3, 40)
    before = sparse(x).detach()
    with torch.no_grad():
        sparse.values.mul_(2)
    torch.testing.assert_close(sparse(x) - sparse.bias, 2 * (before - sparse.bias))


def test_bad_inputs_fail_clearly():
    sparse = SparseLinear.from_dense(pruned(40, 8), format="bitmap")
    with pytest.raises(ValueError, match="shape mismatch"):
        sparse(torch.randn(2, 41))
    with pytest.raises(TypeError, match="dtype"):
        sparse(torch.randn(2, 40, dtype=torch.float64))
    with pytest.raises(ValueError, match="bitmap must be int64"):
        torch.ops.sparsegemm.bitmap_linear(torch.randn(2, 40), sparse.bitmap.int(),
                                           sparse.values, 40, None)
    with pytest.raises(ValueError, match="blocksize applies"):
        SparseLinear.from_dense(pruned(4, 4), format="bitmap", blocksize=(4, 1))
    with pytest.raises(NotImplementedError, match="CSR only"):
        SparseConv2d.from_dense(nn.Conv2d(2, 3, 3), format="bitmap")


def test_compile_traces_the_op():
    sparse = SparseLinear.from_dense(pruned(64, 16), format="bitmap")
    x = torch.randn(4, 64)
    compiled = torch.compile(sparse, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), sparse(x))


def test_sparsify_bitmap_and_auto(planner_times):
    model = nn.Sequential(pruned(64, 32, density=0.4), nn.ReLU(), pruned(32, 8, density=0.4))
    torch.manual_seed(1)
    x = torch.randn(3, 64)
    expected = model(x)
    sparsify(model, format="bitmap", min_sparsity=0.5)
    assert model[0].format == "bitmap" and model[2].format == "bitmap"
    torch.testing.assert_close(model(x), expected)
    report = {layer.name: layer for layer in model.sparsegemm_report}
    assert report["0"].format == "bitmap"

    timer = planner_times(dense=1.0, csr=0.9, bitmap=0.4)
    auto = nn.Sequential(pruned(64, 32, density=0.4))
    sparsify(auto, format="auto", min_sparsity=0.5, batch_hint=1)
    assert auto[0].format == "bitmap"
    assert "bitmap" in timer.timed[0]
    report = {layer.name: layer for layer in auto.sparsegemm_report}
    assert report["0"].format == "bitmap" and report["0"].speedup == pytest.approx(2.5)


def test_decoder_stack_benchmark_runs_and_checks_every_format(benchmark_script, capsys):
    script = benchmark_script("decoder_stack")
    assert script.main(["--hidden", "64", "--intermediate", "96", "--layers", "2", "--repeats",
                        "1", "--rounds", "1", "--sparsities", "0.5,0.7"]) == 0
    out = capsys.readouterr().out
    for name in ("csr x", "bsr4x1 x", "bitmap x", "auto x", "default x"):
        assert name in out
    assert "50%" in out and "70%" in out
    # auto and default each report what their products ran in: two blocks, and the
    # default's layers decided on the warm-up forward (none left undecided as "auto").
    row = next(line for line in out.splitlines() if line.lstrip().startswith("70%"))
    assert row.count("GB/s; ") == 2 and "auto:" not in row


def test_decoder_stack_benchmark_compares_int8_with_every_int8_dense_road(benchmark_script,
                                                                          capsys):
    script = benchmark_script("decoder_stack")
    assert script.main(["--hidden", "64", "--intermediate", "96", "--layers", "2", "--repeats",
                        "1", "--rounds", "1", "--sparsities", "0.7", "--int8", "--no-auto",
                        "--formats", "bitmap"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "sparsity" in line)
    assert "int8-dyn x" in header and "int8-ao x" in header and "sparse/int8" in header
    row = next(line for line in lines if line.lstrip().startswith("70%"))
    torchao_cell = row.split()[-3]
    if importlib.util.find_spec("torchao") is None:
        assert torchao_cell == "-"
    else:
        assert torchao_cell.endswith("x") and float(torchao_cell[:-1]) > 0
