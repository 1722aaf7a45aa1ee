"""Attention on sparsegemm's kernel in torch: the SDPA drop-in, Hugging Face models
through sparsify, and SparseMultiheadAttention."""

from __future__ import annotations

import copy
import io

import pytest
import torch.nn.functional as F

import sparsegemm
import torch
from sparsegemm.torch import (
    SparseMultiheadAttention,
    SparseTransformerEncoderLayer,
    scaled_dot_product_attention,
    sparsify,
)
from sparsegemm.torch import attention as attention_module
from torch import nn

TOL = {"rtol": 2e-5, "atol": 2e-5}


@pytest.fixture
def kernel_calls(count_calls):
    """The kernel calls made while the test runs (the kernel still runs)."""
    return count_calls(attention_module._core, "attention")


def heads(batch, heads_, rows, dims, seed=0):
    """(batch, heads, rows, dims) views of (batch, rows, heads, dims) tensors, as a
    projection's output is split into heads."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, rows, heads_, dims, generator=generator).transpose(1, 2)


@pytest.mark.parametrize("mask", [None, "bool", "float", "padding"])
def test_matches_torch_sdpa_on_every_isa(isa, kernel_calls, mask):
    q, k, v = heads(2, 3, 9, 24, 0), heads(2, 3, 70, 24, 1), heads(2, 3, 70, 24, 2)
    generator = torch.Generator().manual_seed(3)
    attn_mask = {
        None: None,
        "bool": torch.rand(2, 3, 9, 70, generator=generator) > 0.3,
        "float": torch.randn(2, 1, 9, 70, generator=generator),
        "padding": torch.arange(70).view(1, 1, 1, 70) < torch.tensor([50, 70]).view(2, 1, 1, 1),
    }[mask]
    with torch.inference_mode():
        result = scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=0.2)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=0.2)
    torch.testing.assert_close(result, expected, **TOL)
    assert len(kernel_calls) == 1
    # (batch, heads, rows, dims) over a contiguous (batch, rows, heads, dims) tensor
    assert result.transpose(1, 2).is_contiguous()


def test_fully_masked_query_gives_zeros_as_torch(kernel_calls):
    q, k, v = heads(1, 2, 5, 8, 0), heads(1, 2, 5, 8, 1), heads(1, 2, 5, 8, 2)
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    mask[..., 1, :] = False
    with torch.no_grad():
        result = scaled_dot_product_attention(q, k, v, attn_mask=mask)
        torch.testing.assert_close(result, F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                                   **TOL)
    assert kernel_calls and (result[:, :, 1] == 0).all()


@pytest.mark.parametrize("case", ["grad", "dropout", "causal", "float64", "three_d"])
def test_torch_sdpa_runs_what_the_kernel_does_not(kernel_calls, case):
    q, k, v = heads(1, 2, 6, 8, 0), heads(1, 2, 6, 8, 1), heads(1, 2, 6, 8, 2)
    kwargs = {}
    if case == "grad":
        q.requires_grad_(True)
    elif case == "dropout":
        kwargs["dropout_p"] = 0.5
    elif case == "causal":
        kwargs["is_causal"] = True
    elif case == "float64":
        q, k, v = q.double(), k.double(), v.double()
    else:
        q, k, v = q[0], k[0], v[0]
    torch.manual_seed(0)
    result = scaled_dot_product_attention(q, k, v, **kwargs)
    torch.manual_seed(0)
    expected = F.scaled_dot_product_attention(q, k, v, **kwargs)
    torch.testing.assert_close(result, expected)
    assert kernel_calls == []
    if case == "grad":
        result.sum().backward()
        assert q.grad is not None and torch.isfinite(q.grad).all()


def test_hugging_face_model_switches_to_the_kernel(kernel_calls, pruned_tiny_bert):
    model = pruned_tiny_bert(attn_implementation="sdpa")
    reference = copy.deepcopy(model)
    ids = torch.randint(0, 64, (3, 40))
    padding = torch.ones_like(ids)
    padding[1, 25:] = 0
    sparsify(model, format="csr")
    assert model.config._attn_implementation == "sparsegemm"
    assert "attention: sparsegemm kernel" in str(model.sparsegemm_report)
    with torch.inference_mode():
        for mask in (None, padding):
            torch.testing.assert_close(model(ids, attention_mask=mask).last_hidden_state,
                                       reference(ids, attention_mask=mask).last_hidden_state,
                                       rtol=1e-4, atol=1e-5)
    assert len(kernel_calls) == 4  # two layers, two calls


def test_hugging_face_training_falls_back_and_learns(kernel_calls, pruned_tiny_bert):
    model = sparsify(pruned_tiny_bert(attn_implementation="sdpa"), format="csr")
    model.train()
    ids = torch.randint(0, 64, (2, 12))
    model(ids).last_hidden_state.pow(2).mean().backward()
    assert kernel_calls == []
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_kernel_attention_false_keeps_sdpa(kernel_calls, pruned_tiny_bert):
    model = sparsify(pruned_tiny_bert(attn_implementation="sdpa"), format="csr",
                     kernel_attention=False)
    assert model.config._attn_implementation == "sdpa"
    assert not [note for note in model.sparsegemm_report.notes if note.startswith("attention")]
    with torch.inference_mode():
        model(torch.randint(0, 64, (2, 12)))
    assert kernel_calls == []


def test_eager_models_are_left_alone(pruned_tiny_bert):
    model = pruned_tiny_bert(attn_implementation="sdpa")
    model.set_attn_implementation("eager")
    sparsify(model, format="csr")
    assert model.config._attn_implementation == "eager"


def test_report_notes_survive_a_second_sparsify(pruned_tiny_bert):
    model = sparsify(pruned_tiny_bert(attn_implementation="sdpa"), format="csr")
    sparsify(model, format="csr")
    notes = [note for note in model.sparsegemm_report.notes if note.startswith("attention")]
    assert len(notes) == 2 and "already" in notes[1]


@pytest.mark.parametrize("kernel_attention", [True, False])
def test_multihead_attention_through_the_kernel(kernel_calls, kernel_attention):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    sparse = SparseMultiheadAttention.from_dense(mha)
    sparse.kernel_attention = kernel_attention
    x = torch.randn(3, 17, 32)
    padding = torch.zeros(3, 17, dtype=torch.bool)
    padding[0, 10:] = True
    with torch.inference_mode():
        got, _ = sparse(x, x, x, key_padding_mask=padding, need_weights=False)
        expected, _ = mha(x, x, x, key_padding_mask=padding, need_weights=False)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert len(kernel_calls) == (1 if kernel_attention else 0)


def test_numpy_and_torch_entry_points_agree():
    q, k, v = heads(2, 2, 7, 16, 0), heads(2, 2, 9, 16, 1), heads(2, 2, 9, 16, 2)
    with torch.no_grad():
        result = scaled_dot_product_attention(q, k, v)
    numpy_result = sparsegemm.attention(q.numpy(), k.numpy(), v.numpy())
    torch.testing.assert_close(result, torch.from_numpy(numpy_result), rtol=0, atol=0)


def test_fx_tracing_records_torch_sdpa(kernel_calls):
    class Attend(nn.Module):
        def forward(self, q, k, v):
            return scaled_dot_product_attention(q, k, v)

    graph_module = torch.fx.symbolic_trace(Attend())
    targets = [node.target for node in graph_module.graph.nodes if node.op == "call_function"]
    assert F.scaled_dot_product_attention in targets
    q, k, v = heads(1, 2, 5, 8, 0), heads(1, 2, 5, 8, 1), heads(1, 2, 5, 8, 2)
    with torch.no_grad():
        torch.testing.assert_close(graph_module(q, k, v), F.scaled_dot_product_attention(q, k, v))
    assert kernel_calls == []


def test_transformer_encoder_layer_attention_runs_on_the_kernel(kernel_calls):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    with torch.no_grad():
        layer.self_attn.in_proj_weight.mul_(torch.rand_like(layer.self_attn.in_proj_weight) > 0.8)
    x = torch.randn(2, 9, 32)
    model = nn.Sequential(layer)
    with torch.no_grad():
        expected = model(x)
        sparsify(model, format="csr", min_sparsity=0.5)
        assert isinstance(model[0].self_attn, SparseMultiheadAttention)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    assert len(kernel_calls) == 1


def test_a_wrapped_hugging_face_model_switches_too(kernel_calls, pruned_tiny_bert):
    class Embedder(nn.Module):  # as sentence-transformers holds the transformer
        def __init__(self):
            super().__init__()
            self.encoder = pruned_tiny_bert(attn_implementation="sdpa")
            self.head = nn.Linear(32, 8)

        def forward(self, ids):
            return self.head(self.encoder(ids).last_hidden_state.mean(dim=1))

    model = Embedder().eval()
    expected_model = copy.deepcopy(model)
    sparsify(model, format="csr")
    assert model.encoder.config._attn_implementation == "sparsegemm"
    assert "attention: sparsegemm kernel in encoder" in str(model.sparsegemm_report)
    ids = torch.randint(0, 64, (2, 10))
    with torch.inference_mode():
        torch.testing.assert_close(model(ids), expected_model(ids), rtol=1e-4, atol=1e-5)
    assert len(kernel_calls) == 2


def test_models_without_the_attention_interface_keep_sdpa():
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                   num_heads=2, attn_implementation="sdpa")
    model = transformers.T5Model(config).eval()
    if type(model)._supports_attention_backend:
        pytest.skip("this transformers runs T5 through the attention interface")
    sparsify(model, format="csr", min_sparsity=0.0)
    assert model.config._attn_implementation == "sdpa"
    assert "attention: torch SDPA (the model: T5Model does not take attention functions)" in \
        str(model.sparsegemm_report)


def test_zero_head_size_matches_torch():
    q = torch.zeros(1, 2, 3, 0)
    with torch.no_grad():
        result = scaled_dot_product_attention(q, q, q)
    assert result.shape == (1, 2, 3, 0)


def pruned_encoder_layer(batch_first=True, seed=0, **options):
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=batch_first, **options).eval()
    with torch.no_grad():
        for parameter in layer.parameters():
            if parameter.dim() == 2:
                parameter.mul_(torch.rand_like(parameter) > 0.8)
        for norm in (layer.norm1, layer.norm2):  # distinct norms, so a swap shows
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return layer


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("shape", [(3, 9), (1, 1), (9,), (2, 17)])
def test_self_attention_runs_in_one_kernel_call(isa, fused_calls, batch_first, shape):
    layer = pruned_encoder_layer(batch_first)
    model = nn.Sequential(layer)
    x = torch.randn(*shape, 32)
    with torch.inference_mode():
        expected = copy.deepcopy(model)(x)
        sparsify(model, format="csr", min_sparsity=0.5)
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert fused_calls == {"fused": 1, "attention": 0}


@pytest.mark.parametrize("case", ["padding", "weights", "training", "cross", "dense_out"])
def test_self_attention_takes_separate_calls_where_one_does_not_apply(fused_calls, case):
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.mul_(torch.rand_like(mha.in_proj_weight) > 0.8)
        mha.out_proj.weight.mul_(torch.rand_like(mha.out_proj.weight) > 0.8)
    model = nn.Sequential(nn.Identity(), mha)
    sparsify(model, format="csr", min_sparsity=0.5 if case != "dense_out" else 0.0,
             filter_fn=(lambda module, name: True) if case != "dense_out" else None)
    sparse = model[1]
    if case == "dense_out":
        sparse.out_proj = sparse.out_proj.to_dense()
    x, other = torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    kwargs = {"need_weights": case == "weights"}
    if case == "padding":
        padding = torch.zeros(2, 7, dtype=torch.bool)
        padding[0, 5:] = True
        kwargs["key_padding_mask"] = padding
    key = other if case == "cross" else x
    if case == "training":
        sparse.train()
    with torch.no_grad():
        got, _ = sparse(x, key, key, **kwargs)
        expected, _ = mha(x, key, key, **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert fused_calls["fused"] == 0



@pytest.fixture
def norm_calls(count_calls):
    from sparsegemm.torch import layer_norm as layer_norm_module

    return count_calls(layer_norm_module._core, "layer_norm")


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("fuse_layer_norm", [True, False])
@pytest.mark.parametrize("mask", [None, "padding", "square"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_takes_the_layer_by_layer_forward(norm_calls, fused_calls, norm_first,
                                                          fuse_layer_norm, mask, activation):
    layer = pruned_encoder_layer(True, norm_first=norm_first, activation=activation)
    model = nn.Sequential(layer)
    reference = copy.deepcopy(model)
    x = torch.randn(2, 7, 32)
    kwargs = {}
    if mask == "padding":
        kwargs["src_key_padding_mask"] = torch.zeros(2, 7, dtype=torch.bool)
        kwargs["src_key_padding_mask"][1, 4:] = True
    elif mask == "square":
        kwargs["src_mask"] = torch.triu(torch.full((7, 7), float("-inf")), diagonal=1)
    sparsify(model, format="csr", min_sparsity=0.5, fuse_layer_norm=fuse_layer_norm)
    sparse = model[0]
    assert type(sparse) is SparseTransformerEncoderLayer
    assert sparse.residual_norm_kernel == (fuse_layer_norm and not norm_first)
    with torch.inference_mode():
        expected = reference[0](x, **kwargs)
        got = sparse(x, **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    unmasked = mask is None
    assert len(norm_calls) == (2 if unmasked and fuse_layer_norm and not norm_first else 0)
    assert fused_calls["fused"] == (1 if unmasked else 0)


def test_encoder_layer_pickles_copies_and_trains():
    layer = pruned_encoder_layer(True, dropout=0.0)
    model = nn.Sequential(layer)
    reference = copy.deepcopy(model).train()
    sparsify(model, format="csr", min_sparsity=0.5)
    x = torch.randn(2, 5, 32)
    with torch.inference_mode():
        expected = model(x)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    clone = copy.deepcopy(model)
    with torch.inference_mode():
        for other in (loaded, clone):
            assert type(other[0]) is SparseTransformerEncoderLayer
            torch.testing.assert_close(other(x), expected)
    model.train()
    got = model(x.requires_grad_())
    torch.testing.assert_close(got, reference(x), rtol=1e-4, atol=1e-5)
    got.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
