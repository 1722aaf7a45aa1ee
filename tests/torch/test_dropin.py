"""Code written for nn.Linear and nn.MultiheadAttention keeps working on the sparse modules."""

import pytest

torch = pytest.importorskip("torch")
from sparsegemm.torch import SparseConv2d, SparseLinear, sparsify
from torch import nn


def test_weight_is_a_dense_read_only_view(prune):
    dense = prune(nn.Linear(12, 7), 0.8)
    sparse = SparseLinear.from_dense(dense)
    torch.testing.assert_close(sparse.weight, dense.weight, rtol=0, atol=0)
    assert not sparse.weight.requires_grad
    with pytest.raises((AttributeError, KeyError)):
        sparse.weight = nn.Parameter(torch.zeros(7, 12))
    conv = prune(nn.Conv2d(3, 4, 3), 0.8)
    torch.testing.assert_close(SparseConv2d.from_dense(conv).weight, conv.weight, rtol=0, atol=0)


def test_encoder_layer_with_hand_swapped_sparse_linears_in_eval_under_no_grad(prune):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()
    prune(layer.linear1, 0.8)
    prune(layer.linear2, 0.8)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        expected = layer(x)  # the fused fast path reads linear1.weight and linear2.weight
        layer.linear1 = SparseLinear.from_dense(layer.linear1)
        layer.linear2 = SparseLinear.from_dense(layer.linear2)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_sparsified_attention_still_has_in_proj_weight(prune):
    torch.manual_seed(0)
    model = nn.Sequential(nn.MultiheadAttention(8, 2))
    with torch.no_grad():
        model[0].in_proj_weight.mul_(torch.rand(24, 8) > 0.8)
    packed, bias = model[0].in_proj_weight.detach().clone(), model[0].in_proj_bias.detach().clone()
    sparsify(model, format="csr", min_sparsity=0.5)
    assert isinstance(model[0].q_proj, SparseLinear)
    torch.testing.assert_close(model[0].in_proj_weight, packed, rtol=0, atol=0)
    torch.testing.assert_close(model[0].in_proj_bias, bias, rtol=0, atol=0)


def test_bsr_repr_and_the_report_show_the_same_weight_sparsity():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64))
    with torch.no_grad():
        model[0].weight.mul_(torch.rand(64, 64) > 0.9)
    sparsify(model, format="bsr", blocksize=(4, 1))
    layer, row = model[0], model.sparsegemm_report[0]
    assert layer.sparsity == pytest.approx(row.sparsity)
    assert layer.stored_fraction > 1 - row.sparsity  # whole 4x1 blocks are stored
    assert f"sparsity={row.sparsity:.1%} (zeros in the weight)" in repr(layer)


def test_the_report_prints_as_a_table_at_a_repl_and_a_second_sparsify_merges(prune):
    model = nn.Sequential(prune(nn.Linear(8, 8), 0.9), prune(nn.Linear(8, 8), 0.9))
    sparsify(model, format="csr", filter_fn=lambda module, name: name == "0")
    assert repr(model.sparsegemm_report) == str(model.sparsegemm_report)
    assert repr(model.sparsegemm_report).startswith("layer")
    sparsify(model, format="csr")
    assert [layer.name for layer in model.sparsegemm_report] == ["0", "1"]
    assert all(layer.converted for layer in model.sparsegemm_report)


def test_a_layer_filter_fn_declines_later_keeps_its_earlier_row(prune):
    model = nn.Sequential(prune(nn.Linear(8, 8), 0.9), nn.Linear(8, 8))
    sparsify(model, format="csr")
    before = [(layer.name, layer.reason) for layer in model.sparsegemm_report]
    assert "sparsity below" in before[1][1]
    sparsify(model, format="csr", filter_fn=lambda module, name: False)
    assert [(layer.name, layer.reason) for layer in model.sparsegemm_report] == before


def test_help_says_auto_times_convolutions_at_run_time_without_example_inputs():
    assert "AutoSparseConv2d" in sparsify.__doc__ and "first forward per input shape" in " ".join(
        sparsify.__doc__.split())
