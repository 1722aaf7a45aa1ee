import importlib

import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils import prune as torch_prune

from sparsegemm.torch import (
    AutoSparseConv2d,
    SparseConv2d,
    SparseLinear,
    SparseMultiheadAttention,
    sparsify,
)
from torch import nn


def small_model(prune):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 4))
    for index, sparsity in ((0, 0.9), (2, 0.9), (5, 0.9), (7, 0.2)):
        prune(model[index], sparsity)
    return model


def test_explicit_csr_converts_sparse_enough_layers_without_timing(prune, planner_times):
    timer = planner_times()
    model = small_model(prune)
    x = torch.randn(2, 3, 4, 4)
    expected = model(x)
    assert sparsify(model, format="csr") is model
    assert timer.timed == []  # an explicit format is never timed
    assert isinstance(model[0], SparseConv2d)
    assert isinstance(model[2], nn.Conv2d)  # groups=2: left dense
    assert isinstance(model[5], SparseLinear)
    assert isinstance(model[7], nn.Linear)  # 20% sparse: below the threshold
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    report = {layer.name: layer for layer in model.sparsegemm_report}
    assert report["0"].converted and report["0"].format == "csr"
    assert report["0"].speedup is None and report["0"].speedup_text == "not measured"
    assert abs(report["5"].sparsity - 0.9) < 0.05
    assert not report["2"].converted and "groups" in report["2"].reason
    assert not report["7"].converted and "sparsity below" in report["7"].reason
    assert "not measured" in str(model.sparsegemm_report)


def test_min_sparsity_counts_zeros_as_a_pruner_rounds_them():
    # 16 weights at 70%: torch's pruner zeroes round(11.2) = 11, a sparsity of 68.75%.
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    torch_prune.l1_unstructured(model[0], "weight", amount=0.7)
    torch_prune.l1_unstructured(model[1], "weight", amount=10)  # one zero short
    sparsify(model, format="csr")
    assert isinstance(model[0], SparseLinear)
    assert isinstance(model[1], nn.Linear)
    assert "sparsity below" in model.sparsegemm_report[1].reason


def test_filter_fn_gets_module_and_fully_qualified_name(prune):
    model = nn.Sequential(nn.Sequential(prune(nn.Linear(8, 8), 0.9)), prune(nn.Linear(8, 8), 0.9))
    seen = []

    def only_inner(module, name):
        seen.append((type(module).__name__, name))
        return name == "0.0"

    sparsify(model, filter_fn=only_inner, min_sparsity=0.5, batch_hint=1)
    assert ("Linear", "0.0") in seen and ("Linear", "1") in seen
    assert isinstance(model[0][0], SparseLinear) and isinstance(model[1], nn.Linear)
    left_out = model.sparsegemm_report[-1]  # listed, with the reason
    assert left_out.name == "1" and not left_out.converted and "filter_fn" in left_out.reason


def test_models_pruned_with_torch_prune():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3))
    torch_prune.global_unstructured([(model[0], "weight"), (model[2], "weight")],
                                    pruning_method=torch_prune.L1Unstructured, amount=0.85)
    x = torch.randn(4, 12)
    expected = model(x)
    sparsify(model, min_sparsity=0.5, min_speedup=0.0, batch_hint=4)
    assert isinstance(model[0], SparseLinear) and isinstance(model[2], SparseLinear)
    torch.testing.assert_close(model(x), expected)


def test_min_sparsity_validation(prune):
    with pytest.raises(ValueError, match="min_sparsity"):
        sparsify(nn.Sequential(nn.Linear(2, 2)), min_sparsity=1.5)
    with pytest.raises(TypeError, match="SparseLinear.from_dense"):
        sparsify(nn.Linear(2, 2))


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_layer(batch_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=batch_first)
    targets = [(m, "weight") for m in layer.modules() if isinstance(m, nn.Linear)]
    targets.append((layer.self_attn, "in_proj_weight"))
    for module, name in targets:
        torch_prune.random_unstructured(module, name, amount=0.9)
        torch_prune.remove(module, name)
    layer.eval()
    x = torch.randn(2, 5, 32) if batch_first else torch.randn(5, 2, 32)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 3:] = True
    with torch.no_grad():
        expected = layer(x)
        expected_masked = layer(x, src_key_padding_mask=mask)
    sparsify(layer, min_sparsity=0.8, min_speedup=0.0, batch_hint=10)
    attention = layer.self_attn
    assert isinstance(attention, SparseMultiheadAttention)
    assert all(isinstance(getattr(attention, p), SparseLinear)
               for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
    assert isinstance(layer.linear1, SparseLinear) and isinstance(layer.linear2, SparseLinear)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)
        out = layer(x, src_key_padding_mask=mask)
        torch.testing.assert_close(out[~mask if batch_first else ~mask.t()],
                                   expected_masked[~mask if batch_first else ~mask.t()],
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_matches_multihead_attention(batch_first):
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    sparse = SparseMultiheadAttention.from_dense(mha)
    q = torch.randn(3, 5, 16)
    k = torch.randn(3, 7, 16)
    v = torch.randn(3, 7, 16)
    if not batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, 5:] = True
    attn_mask = torch.rand(5, 7) > 0.8
    attn_mask[:, 0] = False
    cases = [dict(), dict(need_weights=False), dict(key_padding_mask=padding),
             dict(attn_mask=attn_mask, key_padding_mask=padding, average_attn_weights=False),
             dict(attn_mask=torch.randn(3 * 4, 5, 7), need_weights=False)]
    for kwargs in cases:
        expected, expected_weights = mha(q, k, v, **kwargs)
        out, weights = sparse(q, k, v, **kwargs)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
        if expected_weights is None:
            assert weights is None
        else:
            torch.testing.assert_close(weights, expected_weights, rtol=1e-4, atol=1e-5)
    unbatched = torch.randn(5, 16)
    torch.testing.assert_close(sparse(unbatched, unbatched, unbatched)[0],
                               mha(unbatched, unbatched, unbatched)[0], rtol=1e-4, atol=1e-5)


def test_auto_takes_the_planners_format_and_blocksize(prune, planner_times):
    timer = planner_times(dense=1.0, csr=0.6, bsr8x1=0.25)
    model = nn.Sequential(prune(nn.Linear(64, 32), 0.9), nn.ReLU(), prune(nn.Linear(32, 16), 0.9))
    x = torch.randn(8, 64)
    expected = model(x)
    sparsify(model, format="auto", batch_hint=8)
    assert timer.timed  # measured
    for index in (0, 2):
        assert isinstance(model[index], SparseLinear)
        assert model[index].format == "bsr" and model[index].blocksize == (8, 1)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    report = {layer.name: layer for layer in model.sparsegemm_report}
    assert report["0"].format == "bsr8x1" and report["0"].speedup == pytest.approx(4.0)
    assert "bsr8x1" in str(model.sparsegemm_report) and "4.00x" in str(model.sparsegemm_report)


def test_auto_keeps_a_layer_dense_when_the_planner_measures_no_gain(prune, planner_times):
    planner_times(dense=1.0, csr=1.25, bsr4x1=2.0, bsr8x1=2.0, bsr16x1=2.0, bsr4x4=2.0)
    model = nn.Sequential(prune(nn.Linear(32, 32), 0.9))
    sparsify(model, batch_hint=1)  # format='auto' is the default
    assert type(model[0]) is nn.Linear
    layer = model.sparsegemm_report[0]
    assert not layer.converted and layer.format == "dense"
    assert "no gain" in layer.reason and layer.speedup == pytest.approx(0.8)


def test_auto_min_speedup(prune, planner_times):
    planner_times(dense=1.0, csr=0.5)
    model = nn.Sequential(prune(nn.Linear(32, 16), 0.9), nn.ReLU(), prune(nn.Linear(16, 4), 0.9))
    sparsify(model, min_speedup=3.0, batch_hint=16)
    assert isinstance(model[0], nn.Linear) and isinstance(model[2], nn.Linear)
    assert all("2.00x < 3.00x" in layer.reason for layer in model.sparsegemm_report)
    sparsify(model, min_speedup=1.5, batch_hint=16)
    assert isinstance(model[0], SparseLinear) and isinstance(model[2], SparseLinear)


@pytest.mark.parametrize("sparse_seconds, converted", [(0.5, True), (1.0, False)])
def test_auto_times_convolutions_as_themselves_on_the_example_input(
        prune, planner_times, monkeypatch, sparse_seconds, converted):
    auto_module = importlib.import_module("sparsegemm.torch.auto")
    timer = planner_times(dense=1.0, csr=0.5)
    ran = []  # which convolution each timed call ran

    def fake_median_seconds(call, repeats=7):
        call()
        return sparse_seconds if ran[-1] == "sparse" else 1.0

    sparse_forward = SparseConv2d.forward

    def recorded_sparse_forward(self, *args, **kwargs):
        ran.append("sparse")
        return sparse_forward(self, *args, **kwargs)

    monkeypatch.setattr(auto_module, "_median_seconds", fake_median_seconds)
    monkeypatch.setattr(SparseConv2d, "forward", recorded_sparse_forward)
    x = torch.randn(1, 4, 6, 6)
    model = nn.Sequential(prune(nn.Conv2d(4, 8, 3), 0.9), nn.Flatten(),
                          prune(nn.Linear(8 * 4 * 4, 4), 0.9))
    model[0].register_forward_pre_hook(lambda module, inputs: ran.append("dense"))
    reference = model(x)
    sparsify(model, batch_hint=1, example_inputs=x)
    conv = model.sparsegemm_report[0]
    assert conv.name == "0" and "timed on input (1, 4, 6, 6)" in (conv.reason or "")
    assert conv.speedup == pytest.approx(1.0 / sparse_seconds)
    assert conv.converted is converted
    assert isinstance(model[0], SparseConv2d if converted else nn.Conv2d)
    assert len(timer.timed) == 1, "only the Linear layer goes through the planner"
    torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-5)


def test_a_cached_planner_figure_is_marked_as_cached(prune, planner_times):
    timer = planner_times(dense=1.0, csr=0.5)
    layer = prune(nn.Linear(32, 32), 0.9)
    first = sparsify(nn.Sequential(layer), batch_hint=4).sparsegemm_report[0]
    twin = nn.Linear(32, 32)
    twin.load_state_dict(layer.state_dict())
    second = sparsify(nn.Sequential(twin), batch_hint=4).sparsegemm_report[0]
    assert len(timer.timed) == 1  # the second layer's figure was not measured
    assert not first.cached and first.speedup_text == "2.00x"
    assert second.cached and second.speedup_text == "2.00x (cached)"


def test_auto_times_convolutions_at_run_time_without_example_inputs(prune, planner_times):
    planner_times()
    model = nn.Sequential(prune(nn.Conv2d(4, 8, 3), 0.9))
    sparsify(model)
    assert isinstance(model[0], AutoSparseConv2d)
    assert model.sparsegemm_report[0].format == "auto"
    assert "first forward of each input shape" in model.sparsegemm_report[0].note


def test_explicit_bsr_with_blocksize(prune, planner_times):
    timer = planner_times()
    model = nn.Sequential(prune(nn.Conv2d(4, 8, 1), 0.9), nn.Flatten(),
                          prune(nn.Linear(8 * 3 * 3, 8), 0.9))
    x = torch.randn(2, 4, 3, 3)
    expected = model(x)
    sparsify(model, format="bsr", blocksize=(2, 2), min_sparsity=0.5)
    assert timer.timed == []
    assert model[2].format == "bsr" and model[2].blocksize == (2, 2)
    assert model[0].format == "csr"  # no BSR convolution
    report = {layer.name: layer for layer in model.sparsegemm_report}
    assert report["2"].format == "bsr2x2" and report["2"].speedup is None
    assert report["0"].format == "csr" and "stored as CSR" in report["0"].reason
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_bad_format_arguments():
    with pytest.raises(ValueError, match="blocksize applies"):
        sparsify(nn.Sequential(nn.Linear(2, 2)), format="csr", blocksize=(4, 1))
    with pytest.raises(ValueError, match="format must be"):
        sparsify(nn.Sequential(nn.Linear(2, 2)), format="coo")
    with pytest.raises(ValueError, match="batch_hint"):
        sparsify(nn.Sequential(nn.Linear(2, 2)), batch_hint=0)


class RenamedLinear(nn.Linear):
    """A subclass that keeps nn.Linear's forward: a plain linear map."""


class ScaledLinear(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


def test_linear_subclasses_are_converted_or_listed_with_the_reason(prune):
    model = nn.Sequential(prune(RenamedLinear(8, 8), 0.9), prune(ScaledLinear(8, 8), 0.9))
    x = torch.randn(3, 8)
    expected = model(x)
    sparsify(model, format="csr")
    assert isinstance(model[0], SparseLinear) and isinstance(model[1], ScaledLinear)
    report = {layer.name: layer for layer in model.sparsegemm_report}
    assert report["0"].converted and report["0"].kind == "RenamedLinear"
    assert not report["1"].converted and "own forward" in report["1"].reason
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias, affine", [(False, True), (True, False)])
def test_eval_batchnorm_after_a_sparse_conv_is_folded(prune, bias, affine):
    torch.manual_seed(0)
    model = nn.Sequential(prune(nn.Conv2d(4, 8, 3, padding=1, bias=bias), 0.9),
                          nn.BatchNorm2d(8, affine=affine), nn.ReLU(),
                          prune(nn.Conv2d(8, 8, 1), 0.9), nn.BatchNorm2d(8))
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            if bn.affine:
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-1, 1)
    model.eval()
    x = torch.randn(2, 4, 6, 6)
    expected = model(x)
    sparsify(model, format="csr")
    assert isinstance(model[0], SparseConv2d) and isinstance(model[1], nn.Identity)
    assert isinstance(model[4], nn.Identity)
    assert "folded BatchNorm2d 1" in model.sparsegemm_report[0].reason
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_training_batchnorm_and_dense_convs_are_left_alone(prune):
    torch.manual_seed(0)
    model = nn.Sequential(prune(nn.Conv2d(4, 8, 3), 0.9), nn.BatchNorm2d(8),
                          prune(nn.Conv2d(8, 8, 1), 0.2), nn.BatchNorm2d(8).eval())
    sparsify(model, format="csr")
    assert isinstance(model[0], SparseConv2d) and isinstance(model[1], nn.BatchNorm2d)
    assert isinstance(model[2], nn.Conv2d) and isinstance(model[3], nn.BatchNorm2d)


def test_self_attention_makes_one_stacked_qkv_product(prune):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    prune(mha.out_proj, 0.9)
    with torch.no_grad():
        mha.in_proj_weight.mul_(torch.rand(48, 16) > 0.9)
    model = nn.Sequential()
    model.add_module("attn", mha)
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    expected_self, _ = mha(x, x, x)
    expected_cross, _ = mha(x, memory, memory)
    sparsify(model, format="csr")
    attention = model.attn
    assert isinstance(attention.in_proj, SparseLinear) and attention.in_proj.out_features == 48
    calls = []
    for name in ("q_proj", "k_proj", "v_proj", "in_proj"):
        getattr(attention, name).register_forward_hook(
            lambda module, inputs, output, name=name: calls.append(name))
    for context in (torch.no_grad, torch.enable_grad):
        with context():
            torch.testing.assert_close(attention(x, x, x)[0], expected_self, rtol=1e-4, atol=1e-5)
    assert calls == ["in_proj", "in_proj"]
    calls.clear()
    out, _ = attention(x, memory, memory)  # cross-attention: the separate projections
    torch.testing.assert_close(out, expected_cross, rtol=1e-4, atol=1e-5)
    assert calls == ["q_proj", "k_proj", "v_proj"]
