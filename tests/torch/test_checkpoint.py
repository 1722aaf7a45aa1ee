"""A sparsified model survives torch.save/load and Hugging Face save_pretrained/from_pretrained."""

import pytest

torch = pytest.importorskip("torch")
from sparsegemm.torch import (
    SparseConv2d,
    SparseLinear,
    SparseMultiheadAttention,
    from_pretrained,
    load_sparsified,
    sparsify,
)
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.first = nn.Linear(16, 8)
        self.second = nn.Linear(8, 8)
        self.dense = nn.Linear(8, 3)

    def forward(self, image, tokens):
        features = self.conv(image).flatten(1)  # (N, 16) for 2x2 images
        hidden = self.second(torch.relu(self.first(features)))
        attended, _ = self.attention(tokens + hidden[:, None], tokens, tokens)
        return self.dense(attended)


def pruned_net(prune):
    torch.manual_seed(0)
    net = Net().eval()
    for module in (net.conv, net.first, net.second, net.attention.out_proj):
        prune(module, 0.8)
    with torch.no_grad():  # the packed in-projection: q, k and v all 80% zeros
        net.attention.in_proj_weight.mul_(torch.rand(24, 8) > 0.8)
    return net


def inputs():
    return torch.randn(3, 2, 2, 2), torch.randn(3, 5, 8)


def test_torch_save_round_trip_into_a_fresh_model(prune, tmp_path):
    net = pruned_net(prune)
    sparsify(net, format="csr", min_sparsity=0.5)
    net.second = SparseLinear.from_dense(net.second.to_dense(), format="bsr", blocksize=(2, 1))
    x = inputs()
    expected = net(*x)
    torch.save(net.state_dict(), tmp_path / "sparse.pt")

    fresh = Net().eval()
    with pytest.raises(RuntimeError, match="values"):  # the plain load refuses, it does not guess
        fresh.load_state_dict(torch.load(tmp_path / "sparse.pt"))
    loaded = load_sparsified(Net().eval(), torch.load(tmp_path / "sparse.pt"))
    assert isinstance(loaded.conv, SparseConv2d)
    assert isinstance(loaded.attention, SparseMultiheadAttention)
    assert loaded.second.blocksize == (2, 1) and loaded.first.format == "csr"
    assert isinstance(loaded.dense, nn.Linear)  # stayed dense: loaded as it was
    torch.testing.assert_close(loaded(*x), expected)


def test_min_sparsity_zero_converts_every_layer_and_reloads(prune):
    net = pruned_net(prune)
    sparsify(net, format="csr", min_sparsity=0.0)
    x = inputs()
    loaded = load_sparsified(Net().eval(), net.state_dict())
    assert isinstance(loaded.dense, SparseLinear)
    torch.testing.assert_close(loaded(*x), net(*x))


def test_a_state_dict_of_another_architecture_is_refused(prune):
    net = pruned_net(prune)
    sparsify(net, format="csr", min_sparsity=0.5)
    with pytest.raises(ValueError, match="same architecture"):
        load_sparsified(nn.Sequential(nn.Linear(16, 8)), net.state_dict())


def test_a_bsr_state_dict_into_a_csr_module_says_how_to_build_it(prune):
    dense = prune(nn.Linear(8, 6), 0.7)
    state = SparseLinear.from_dense(dense, format="bsr", blocksize=(2, 1)).state_dict()
    with pytest.raises(RuntimeError, match=r"format='bsr', blocksize=\(2, 1\)"):
        SparseLinear(8, 6).load_state_dict(state)
    fresh = SparseLinear(8, 6, format="bsr", blocksize=(2, 1))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.weight, dense.weight)


# --- Hugging Face --------------------------------------------------------------------------

def _prune_linear_maps(model, sparsity):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, module in model.named_modules():
            if type(module).__name__ in ("Linear", "Conv1D") and "lm_head" not in name:
                module.weight.mul_(torch.rand(module.weight.shape, generator=generator) >= sparsity)


def test_bert_save_pretrained_and_from_pretrained(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=48)
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    _prune_linear_maps(model, 0.9)
    sparsify(model, format="csr")
    ids = torch.randint(0, 64, (2, 7))
    expected = model(ids).last_hidden_state
    model.save_pretrained(tmp_path)

    loaded = from_pretrained(transformers.BertModel, tmp_path)
    assert isinstance(loaded.encoder.layer[0].intermediate.dense, SparseLinear)
    assert not loaded.training
    torch.testing.assert_close(loaded(ids).last_hidden_state, expected)


def test_gpt2_conv1d_layers_are_converted_saved_and_reloaded(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2,
                                     n_positions=16, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    _prune_linear_maps(model, 0.9)
    ids = torch.randint(0, 64, (1, 6))
    expected = model(ids).logits
    sparsify(model, format="bsr", blocksize=(4, 1), min_sparsity=0.5)
    report = {layer.name: layer for layer in model.sparsegemm_report}
    assert report["transformer.h.0.attn.c_attn"].converted
    assert report["transformer.h.0.mlp.c_proj"].kind == "Conv1D"
    assert isinstance(model.transformer.h[0].mlp.c_fc, SparseLinear)
    torch.testing.assert_close(model(ids).logits, expected, rtol=1e-5, atol=1e-5)

    model.save_pretrained(tmp_path)
    loaded = from_pretrained(transformers.GPT2LMHeadModel, tmp_path)
    assert loaded.transformer.h[0].attn.c_proj.blocksize == (4, 1)
    torch.testing.assert_close(loaded(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_gpt2_with_the_default_sparsify_decides_freezes_and_reloads(tmp_path, planner_times):
    transformers = pytest.importorskip("transformers")
    from sparsegemm.torch import freeze

    planner_times(dense=1.0, csr=0.1)  # CSR wins wherever it is timed
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2,
                                     n_positions=16, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    _prune_linear_maps(model, 0.9)
    ids = torch.randint(0, 64, (1, 6))
    expected = model(ids).logits
    sparsify(model)  # Conv1D layers become AutoSparseLinear, deciding on the first forward
    torch.testing.assert_close(model(ids).logits, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="freeze"):
        load_sparsified(transformers.GPT2LMHeadModel(config), model.state_dict())
    freeze(model)
    assert isinstance(model.transformer.h[0].mlp.c_fc, SparseLinear)
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(transformers.GPT2LMHeadModel, tmp_path)
    torch.testing.assert_close(loaded(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_a_bitmap_layer_reloads(prune, tmp_path):
    net = pruned_net(prune)
    sparsify(net, format="bitmap", min_sparsity=0.5)
    assert net.first.format == "bitmap"
    x = inputs()
    expected = net(*x)
    torch.save(net.state_dict(), tmp_path / "bitmap.pt")
    loaded = load_sparsified(Net().eval(), torch.load(tmp_path / "bitmap.pt"))
    assert loaded.first.format == "bitmap"
    torch.testing.assert_close(loaded(*x), expected)
