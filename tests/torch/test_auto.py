"""sparsify(model) as a newcomer calls it: layers plan on the inputs they really see."""

import pytest

torch = pytest.importorskip("torch")
from sparsegemm.torch import (
    AutoSparseConv2d,
    AutoSparseLinear,
    SparseConv2d,
    SparseLinear,
    SparseMultiheadAttention,
    freeze,
    sparsify,
)
from sparsegemm.torch.auto import row_bucket
from torch import nn


def mlp(prune):
    torch.manual_seed(0)
    return nn.Sequential(prune(nn.Linear(24, 32), 0.9), nn.ReLU(), prune(nn.Linear(32, 8), 0.9))


def test_row_bucket():
    assert [row_bucket(r) for r in (0, 1, 2, 3, 4, 5, 128, 129)] == [1, 1, 2, 4, 4, 8, 128, 256]


def test_no_arguments_decides_on_the_first_forward_per_row_bucket(prune, planner_times):
    timer = planner_times(dense=1.0, csr=0.5, bsr4x1=0.25)
    model = mlp(prune)
    x = torch.randn(3, 5, 24)  # 15 rows
    expected = model(x)
    sparsify(model)
    assert timer.timed == []  # nothing timed before a forward
    assert isinstance(model[0], AutoSparseLinear)
    assert "decides on the first forward" in str(model.sparsegemm_report)
    assert model.sparsegemm_report[0].speedup_text == "not yet"
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert len(timer.timed) == 2  # one plan per layer
    assert model[0].decisions[16].rows == 15
    assert model[0].decisions[16].choice.label == "bsr4x1"
    assert "rows 15: bsr4x1 4.00x" in str(model.sparsegemm_report)
    assert model.sparsegemm_report[0].speedup_text == "per rows"
    model(torch.randn(9, 24))  # same bucket: no timing
    assert len(timer.timed) == 2
    model(torch.randn(2, 24))  # a new bucket: timed again
    assert len(timer.timed) == 4 and sorted(model[2].decisions) == [2, 16]


def test_a_bucket_measured_without_gain_stays_dense_and_says_why(prune, planner_times):
    planner_times(dense=1.0, csr=2.0, bsr4x1=1.5, bsr8x1=3.0, bsr16x1=3.0, bsr4x4=3.0)
    model = mlp(prune)
    x = torch.randn(4, 24)
    expected = model(x)
    sparsify(model)
    torch.testing.assert_close(model(x), expected)
    decision = model[0].decisions[4]
    assert decision.choice.format == "dense" and "bsr4x1 measured 0.67x" in decision.reason
    assert "below the planner's 1.10x margin" in str(model.sparsegemm_report)
    assert not model[0].variants  # no sparse copy built for nothing
    freeze(model)
    # The ReLU that followed moved into the layer; a dense layer gets it back beside it.
    assert type(model[0]) is nn.Sequential and type(model[0][0]) is nn.Linear
    assert type(model[0][1]) is nn.ReLU and type(model[1]) is nn.Identity
    torch.testing.assert_close(model(x), expected)


def test_freeze_replaces_agreeing_modules_and_never_times(prune, planner_times):
    timer = planner_times(dense=1.0, csr=0.5)
    model = mlp(prune)
    sparsify(model)
    x = torch.randn(8, 24)
    expected = model(x)
    assert freeze(model) is model
    assert type(model[0]) is SparseLinear and model[0].format == "csr"
    timed = len(timer.timed)
    torch.testing.assert_close(model(torch.randn(1000, 24)).shape, torch.Size([1000, 8]))
    torch.testing.assert_close(model(x), expected)
    assert len(timer.timed) == timed


def test_frozen_module_with_differing_buckets_maps_unseen_rows_to_the_nearest(prune, planner_times):
    timer = planner_times(dense=1.0, csr=0.5)
    layer = AutoSparseLinear(prune(nn.Linear(24, 8), 0.9))
    x1, x64 = torch.randn(1, 24), torch.randn(64, 24)
    layer(x1)
    planner_times(dense=1.0, csr=2.0, bsr4x1=0.5)
    layer(x64)
    assert layer.decisions[1].choice.label == "csr" and layer.decisions[64].choice.label == "bsr4x1"
    model = nn.Sequential(layer)
    freeze(model)
    assert model[0] is layer and layer.frozen
    timer = planner_times()
    reference = layer.dense(torch.randn(1, 24))  # dense reference module is kept
    assert reference.shape == (1, 8)
    for rows in (2, 48, 500):
        x = torch.randn(rows, 24)
        torch.testing.assert_close(layer(x), layer.dense(x), rtol=1e-5, atol=1e-5)
    assert timer.timed == []
    assert layer._nearest(row_bucket(2)) is layer.decisions[1]
    assert layer._nearest(row_bucket(500)) is layer.decisions[64]
    assert "(frozen)" in repr(layer)


def test_example_inputs_plan_each_linear_at_its_rows(prune, planner_times):
    planner_times(dense=1.0, csr=0.5)
    model = mlp(prune)
    x = torch.randn(2, 7, 24)
    expected = model(x)
    sparsify(model, example_inputs=x)
    assert type(model[0]) is SparseLinear and type(model[2]) is SparseLinear
    notes = [layer.reason for layer in model.sparsegemm_report]
    assert notes == ["planned at 14 rows (rows seen in example_inputs); fused ReLU 1; feeds 2: "
                     "both run as one feed-forward kernel at inference",
                     "planned at 14 rows (rows seen in example_inputs)"]
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_example_inputs_reach_a_fused_transformer_layer(planner_times, prune):
    planner_times(dense=1.0, csr=0.5)
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True).eval()
    for linear in (layer.linear1, layer.linear2, layer.self_attn.out_proj):
        prune(linear, 0.9)
    with torch.no_grad():
        layer.self_attn.in_proj_weight.mul_(torch.rand(96, 32) > 0.9)
    x = torch.randn(3, 10, 32)
    with torch.no_grad():
        expected = layer(x)
        sparsify(layer, example_inputs=x)
    assert isinstance(layer.self_attn, SparseMultiheadAttention)
    notes = {entry.name: entry.reason for entry in layer.sparsegemm_report}
    assert set(notes) == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.out_proj", "self_attn.in_proj", "linear1", "linear2"}
    assert all(note.startswith("planned at 30 rows (rows seen in example_inputs)")
               for note in notes.values())
    assert "q, k, v stacked" in notes["self_attn.in_proj"]
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)


def test_auto_layers_inside_attention(planner_times, prune):
    planner_times(dense=1.0, csr=0.5)
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    prune(mha.out_proj, 0.9)
    with torch.no_grad():
        mha.in_proj_weight.mul_(torch.rand(48, 16) > 0.9)
    model = nn.Sequential()
    model.add_module("attn", mha)
    q = torch.randn(2, 5, 16)
    expected, _ = mha(q, q, q)
    sparsify(model)
    attention = model.attn
    assert isinstance(attention.q_proj, AutoSparseLinear)
    out, _ = attention(q, q, q)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    # Self-attention runs the stacked q, k, v projection: it decides; q_proj never ran.
    assert attention.in_proj.decisions[16].rows == 10 and not attention.q_proj.decisions
    freeze(model)
    assert type(attention.in_proj) is SparseLinear and attention.in_proj.out_features == 48
    assert type(attention.q_proj) is nn.Linear  # undecided: frozen dense
    torch.testing.assert_close(attention(q, q, q)[0], expected, rtol=1e-4, atol=1e-5)


def test_tracing_never_times(prune, planner_times):
    timer = planner_times()
    model = mlp(prune)
    sparsify(model)
    traced = torch.fx.symbolic_trace(model)  # proxies: no row count, nothing timed
    assert timer.timed == []
    x = torch.randn(4, 24)
    torch.testing.assert_close(traced(x), model[2].dense(torch.relu(model[0].dense(x))))


def test_fused_relu_and_gelu_give_the_unfused_output(prune, planner_times):
    planner_times(dense=1.0, csr=0.5)
    torch.manual_seed(0)
    model = nn.Sequential(prune(nn.Linear(24, 32), 0.9), nn.ReLU(),
                          prune(nn.Linear(32, 16), 0.9), nn.GELU(approximate="tanh"),
                          prune(nn.Linear(16, 8), 0.9), nn.GELU())
    x = torch.randn(5, 24)
    expected = model(x)
    sparsify(model)
    assert [type(m).__name__ for m in model] == ["AutoSparseLinear", "Identity"] * 3
    assert [m.activation for m in model[::2]] == ["relu", "gelu_tanh", "gelu"]
    assert "fused ReLU 1" in model.sparsegemm_report[0].reason
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)  # with autograd
    model(x).sum().backward()
    freeze(model)
    assert [m.activation for m in model[::2]] == ["relu", "gelu_tanh", "gelu"]
    assert all(type(m) is SparseLinear for m in model[::2])
    with torch.inference_mode():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_frozen_model_with_fused_activations_exports(prune, planner_times):
    planner_times(dense=1.0, csr=0.5)
    model = mlp(prune)
    x = torch.randn(16, 24)
    expected = model(x)
    sparsify(model)
    model(x)
    freeze(model)
    assert type(model[0]) is SparseLinear and model[0].activation == "relu"
    timer = planner_times()
    program = torch.export.export(model, (x,))
    torch.testing.assert_close(program.module()(x), expected, rtol=1e-5, atol=1e-5)
    assert timer.timed == []


def test_a_transformer_encoder_layer_runs_after_sparsify_with_no_arguments(planner_times):
    """nn.TransformerEncoderLayer reads its attention's in_proj_weight/in_proj_bias, which
    read the projections' .weight and .bias: an undecided AutoSparseLinear must have them."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0).eval()
    with torch.no_grad():
        for module in layer.modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(torch.rand_like(module.weight) > 0.9)
        layer.self_attn.in_proj_weight.mul_(torch.rand_like(layer.self_attn.in_proj_weight) > 0.9)
    x = torch.randn(5, 2, 32)
    with torch.no_grad():
        expected = layer(x)
        sparsify(layer)
        assert layer.self_attn.in_proj_bias is not None
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["csr", "bsr4x1", "bitmap"])
def test_a_first_forward_under_inference_mode_builds_usable_variants(prune, planner_times, fmt):
    """The usual inference call: sparsify(model), then forward inside torch.inference_mode.
    The variant built there must not hold inference tensors (it crashed on their missing
    version counter) and must still train afterwards."""
    planner_times(dense=1.0, **{fmt: 0.25})
    model = mlp(prune)
    x = torch.randn(4, 24)
    expected = model(x)
    sparsify(model)
    with torch.inference_mode():
        first = model(x)
        second = model(x)
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, expected, rtol=1e-5, atol=1e-5)
    assert model[0].decisions[4].choice.label == fmt
    assert not any(t.is_inference() for t in model.state_dict().values())
    model(x).sum().backward()  # fine-tuning after an inference-mode first forward


class _ActivatedChild(nn.Module):
    """Hugging Face's BertIntermediate shape: a Linear child, then an activation child."""

    def __init__(self, activation: nn.Module, reuse_output: bool = False):
        super().__init__()
        self.dense = nn.Linear(24, 48)
        self.act = activation
        self.reuse_output = reuse_output

    def forward(self, x):
        h = self.dense(x)
        return self.act(h) + h if self.reuse_output else self.act(h)


class _Untraceable(_ActivatedChild):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.act(self.dense(x))
        return self.act(self.dense(-x))


def _activation_modules():
    modules = [nn.ReLU(), nn.GELU(), nn.GELU(approximate="tanh")]
    try:
        from transformers.activations import GELUActivation, NewGELUActivation
    except ImportError:
        return modules
    return modules + [GELUActivation(), NewGELUActivation()]


@pytest.mark.parametrize("activation", _activation_modules(), ids=lambda m: type(m).__name__)
def test_an_activation_child_outside_a_sequential_is_fused(prune, planner_times, activation):
    planner_times(dense=1.0, csr=0.5)
    torch.manual_seed(0)
    model = nn.Sequential(_ActivatedChild(activation), nn.Linear(48, 8))
    prune(model[0].dense, 0.9)
    x = torch.randn(6, 24)
    expected = model(x)
    sparsify(model)
    assert isinstance(model[0].act, nn.Identity)
    assert model[0].dense.activation is not None
    assert f"fused {type(activation).__name__} 0.act" in model.sparsegemm_report[0].reason
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=2e-6)  # with autograd


@pytest.mark.parametrize("parent", [_ActivatedChild(nn.GELU(), reuse_output=True),
                                    _Untraceable(nn.GELU())], ids=["output reused", "untraceable"])
def test_an_activation_that_may_not_be_fused_stays(prune, planner_times, parent):
    planner_times(dense=1.0, csr=0.5)
    prune(parent.dense, 0.9)
    x = torch.randn(6, 24)
    expected = parent(x)
    sparsify(parent)
    assert isinstance(parent.act, nn.GELU) and parent.dense.activation is None
    assert "fused" not in parent.sparsegemm_report[0].reason
    with torch.no_grad():
        torch.testing.assert_close(parent(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_a_transformer_layer_activation_moves_into_linear1(prune, planner_times, activation):
    planner_times(dense=1.0, csr=0.5)
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation=activation,
                                       batch_first=True).eval()
    for linear in (layer.linear1, layer.linear2):
        prune(linear, 0.9)
    x = torch.randn(3, 10, 32)
    with torch.no_grad():
        expected = layer(x)
    sparsify(layer)
    assert isinstance(layer.activation, nn.Identity)
    assert layer.linear1.activation == activation
    note = {entry.name: entry.reason for entry in layer.sparsegemm_report}["linear1"]
    assert f"fused F.{activation}" in note
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)


def test_a_variant_runs_through_its_hooks_with_the_fused_activation(prune, planner_times):
    # Profilers and the e2e time breakdown hook the sparse modules that run.
    planner_times(dense=1.0, csr=0.5)
    model = nn.Sequential(prune(nn.Linear(24, 32), 0.9), nn.GELU())
    x = torch.randn(5, 24)
    expected = model(x)
    sparsify(model)
    with torch.no_grad():
        model(x)
    variant = next(iter(model[0].variants.values()))
    assert variant.activation == "gelu"
    seen = []
    variant.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad():
        out = model(x)
    assert len(seen) == 1 and seen[0] is out
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=2e-6)
    model[0].activation = None  # the setter reaches the variants
    assert variant.activation is None


@pytest.fixture
def conv_times(monkeypatch):
    """Injects a convolution's measured speedups (dense time over CSR time), one per timing
    in turn, the last repeated. Both forms still run at each timing, so a form that fails
    would fail the test. Returns the list of speedups handed out."""
    from sparsegemm.torch import auto

    timed = []

    def install(*speedups):
        def fake_time_convolution(dense, sparse):
            dense()
            sparse()
            timed.append(speedups[min(len(timed), len(speedups) - 1)])
            return timed[-1]
        monkeypatch.setattr(auto, "time_convolution", fake_time_convolution)
        return timed
    return install


def conv_block(prune, activation=nn.ReLU):
    """conv 3x3 -> eval BatchNorm -> activation -> conv 1x1 -> eval BatchNorm, pruned 90%."""
    torch.manual_seed(0)
    model = nn.Sequential(prune(nn.Conv2d(4, 8, 3, padding=1, bias=False), 0.9),
                          nn.BatchNorm2d(8), activation(),
                          prune(nn.Conv2d(8, 6, 1), 0.9), nn.BatchNorm2d(6))
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
    return model.eval()


def test_a_convolution_decides_on_its_first_forward_per_input_shape(prune, conv_times):
    timed = conv_times(2.0)
    model = conv_block(prune)
    x = torch.randn(3, 4, 6, 6)
    expected = model(x)
    sparsify(model)
    assert timed == []  # nothing timed before a forward
    assert isinstance(model[0], AutoSparseConv2d) and isinstance(model[3], AutoSparseConv2d)
    assert [type(m) for m in (model[1], model[2], model[4])] == [nn.Identity] * 3
    assert model.sparsegemm_report[0].speedup_text == "not yet"
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    assert len(timed) == 2  # one timing per convolution
    assert model[0].decisions[(4, 6, 6)].format == "csr"
    assert isinstance(model[0].variants["csr"], SparseConv2d)
    report = model.sparsegemm_report[0]
    assert report.speedup_text == "per shape"
    assert "input 3x4x6x6: csr 2.00x" in report.note and "folded BatchNorm2d 1" in report.note
    model(torch.randn(4, 4, 6, 6))  # the same batch bucket and image size: not timed
    assert len(timed) == 2
    model(torch.randn(4, 5, 5))  # unbatched, a new image size: timed again
    assert len(timed) == 4 and sorted(model[3].decisions) == [(1, 5, 5), (4, 6, 6)]


@pytest.mark.parametrize("activation", [nn.ReLU, nn.GELU])
def test_a_convolution_without_gain_runs_dense_with_the_batchnorm_folded(prune, conv_times,
                                                                        activation):
    timed = conv_times(0.5)
    model = conv_block(prune, activation)
    x = torch.randn(2, 4, 6, 6)
    expected = model(x)
    sparsify(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    assert len(timed) == 2
    decision = model[0].decisions[(2, 6, 6)]
    assert decision.format == "dense" and "csr measured 0.50x" in decision.reason
    assert not model[0].variants  # no sparse copy kept for nothing
    assert "below the planner's 1.10x margin" in str(model.sparsegemm_report)
    freeze(model)
    # The dense form keeps the folded BatchNorm (one convolution, no BatchNorm pass) and
    # gets its activation back beside it.
    assert type(model[0]) is nn.Sequential and type(model[0][0]) is nn.Conv2d
    assert type(model[0][1]) is activation and type(model[1]) is nn.Identity
    assert type(model[3]) is nn.Conv2d and model[3].bias is not None
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    assert len(timed) == 2


def test_min_speedup_keeps_a_convolution_dense(prune, conv_times):
    conv_times(1.3)
    model = conv_block(prune)
    sparsify(model, min_speedup=1.5)
    model(torch.randn(1, 4, 6, 6))
    assert model[0].decisions[(1, 6, 6)].format == "dense"
    assert "min_speedup's 1.50x margin" in model[0].decisions[(1, 6, 6)].reason


def test_freeze_fixes_convolutions_that_agree_and_keeps_those_that_differ(prune, conv_times):
    # Timing order: both convolutions at 6x6, then both at 3x3.
    conv_times(2.0, 2.0, 2.0, 0.5)
    model = conv_block(prune)
    x, small = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3)
    expected, expected_small = model(x), model(small)
    sparsify(model)
    model(x)
    model(small)
    freeze(model)
    assert isinstance(model[0], SparseConv2d) and model[0].activation == "relu"
    assert isinstance(model[3], AutoSparseConv2d) and model[3].frozen
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(small), expected_small, rtol=1e-4, atol=1e-5)
        before = dict(model[3].decisions)
        model(torch.randn(1, 4, 8, 8))  # unseen: runs its latest decision, times nothing
    assert model[3].decisions == before


def test_tracing_never_times_a_convolution(prune, conv_times):
    timed = conv_times(2.0)
    model = conv_block(prune)
    x = torch.randn(1, 4, 6, 6)
    expected = model(x)
    sparsify(model)
    traced = torch.fx.symbolic_trace(model)  # proxies: nothing timed, the dense forms run
    assert timed == []
    torch.testing.assert_close(traced(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_convolution_times_itself_for_real(prune, dtype):
    """Without stand-ins: both forms are timed on the live input and the output is right
    whichever wins."""
    torch.manual_seed(0)
    conv = prune(nn.Conv2d(3, 5, 3, stride=2, padding=1).to(dtype), 0.8)
    x = torch.randn(2, 3, 9, 9, dtype=dtype)
    expected = conv(x)
    auto_conv = AutoSparseConv2d(conv)
    with torch.inference_mode():
        y = auto_conv(x)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)
    decision = auto_conv.decisions[(2, 9, 9)]
    assert decision.speedup > 0 and decision.format in ("dense", "csr")
    assert decision.shape == (2, 3, 9, 9)


def test_auto_convolution_rejects_what_it_cannot_run():
    with pytest.raises(ValueError, match="groups=1"):
        AutoSparseConv2d(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(TypeError, match="needs an nn.Conv2d"):
        AutoSparseConv2d(nn.Linear(4, 4))
    with pytest.raises(TypeError, match="AutoSparseConv2d use its resolved"):
        freeze(AutoSparseConv2d(nn.Conv2d(4, 4, 3)))


def test_an_unfrozen_convolution_checkpoint_says_to_freeze(prune, conv_times):
    from sparsegemm.torch import load_sparsified

    conv_times(2.0)
    model = conv_block(prune)
    sparsify(model)
    model(torch.randn(1, 4, 6, 6))
    with pytest.raises(ValueError, match="not frozen"):
        load_sparsified(conv_block(prune), model.state_dict())
