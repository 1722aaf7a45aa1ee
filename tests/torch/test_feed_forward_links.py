"""sparsify links two sparse Linears in a row so inference runs them as one kernel.

The links must never change a result: each test compares with the same model
unlinked (or dense), and checks through a counter on the kernel whether the
fused path ran where it should and only there.
"""

import copy

import pytest

torch = pytest.importorskip("torch")

from sparsegemm import _core
from sparsegemm.torch import SparseLinear, freeze, from_pretrained, load_sparsified, sparsify
from sparsegemm.torch import feed_forward as links
from torch import nn


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the calls of the fused kernel (and still runs it)."""
    calls = []
    real = _core.csr_linear_pair

    def counting(*args, **kwargs):
        calls.append(args[-2].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(_core, "csr_linear_pair", counting)
    return calls


def sequential_mlp(prune):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 96), nn.GELU(), nn.Linear(96, 24), nn.ReLU(),
                          nn.Linear(24, 48), nn.ReLU(), nn.Linear(48, 8))
    for layer in model[::2]:
        prune(layer, 0.8)
    return model.eval()


class FeedForwardLayer(nn.Module):
    """``output(act(intermediate(x)))`` with the activation held as a child, as the
    benchmark's HF-style BERT layer writes it."""

    def __init__(self):
        super().__init__()
        self.intermediate = nn.Linear(32, 128)
        self.intermediate_act_fn = nn.GELU()
        self.output = nn.Linear(128, 32)
        self.norm = nn.LayerNorm(32)

    def forward(self, x):
        return self.norm(x + self.output(self.intermediate_act_fn(self.intermediate(x))))


def test_a_sequential_mlp_runs_its_pairs_fused_and_unchanged(prune, fused_calls):
    model = sequential_mlp(prune)
    x = torch.randn(3, 100, 24)
    with torch.no_grad():
        expected = model(x)
        sparsify(model, format="csr")
        assert all(isinstance(layer, SparseLinear) for layer in model[::2])
        # Pairs (0, 2) and (4, 6): each layer takes part in one pair at most.
        assert links.linked_layer(model[0]) is model[2]
        assert links.linked_layer(model[4]) is model[6]
        assert links.linked_layer(model[2]) is None
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert len(fused_calls) == 2
    report = {layer.name: layer.reason for layer in model.sparsegemm_report}
    assert "feeds 2" in report["0"] and "feeds 6" in report["4"]


def test_training_and_recorded_gradients_run_the_layers_one_by_one(prune, fused_calls):
    model = sequential_mlp(prune)
    reference = copy.deepcopy(model)
    sparsify(model, format="csr")
    x = torch.randn(200, 24, requires_grad=True)
    model(x).square().sum().backward()
    assert fused_calls == []
    reference_x = x.detach().clone().requires_grad_(True)
    reference(reference_x).square().sum().backward()
    torch.testing.assert_close(x.grad, reference_x.grad, rtol=1e-4, atol=1e-5)
    grads = [layer.values.grad for layer in model[::2]]
    assert all(grad is not None and grad.abs().sum() > 0 for grad in grads)


def test_a_module_calling_its_children_in_a_chain_is_linked(prune, fused_calls):
    torch.manual_seed(1)
    model = FeedForwardLayer().eval()
    prune(model.intermediate, 0.9)
    prune(model.output, 0.9)
    x = torch.randn(2, 64, 32)
    with torch.no_grad():
        expected = model(x)
        sparsify(model, format="csr")
        assert isinstance(model.intermediate_act_fn, nn.Identity)  # fused first
        assert links.linked_layer(model.intermediate) is model.output
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert len(fused_calls) == 1
    assert set(model.state_dict()) == {"intermediate.indptr", "intermediate.indices",
                                       "intermediate.values", "intermediate.bias",
                                       "output.indptr", "output.indices", "output.values",
                                       "output.bias", "norm.weight", "norm.bias"}


def transformer_layer(prune, dropout=0.1):
    torch.manual_seed(2)
    layer = nn.TransformerEncoderLayer(32, 4, 128, dropout=dropout, batch_first=True)
    for linear in (layer.linear1, layer.linear2):
        prune(linear, 0.9)
    return layer.eval()


def test_a_torch_encoder_layer_links_through_its_dropout_in_eval_mode(prune, fused_calls):
    # _ff_block is linear2(dropout(activation(linear1(x)))): the ReLU is fused into
    # linear1 and the pair linked through the dropout, which passes its input on in
    # eval mode.
    model = transformer_layer(prune)
    x = torch.randn(2, 64, 32)
    with torch.no_grad():
        expected = model(x)
        sparsify(model, format="csr")
        assert links.linked_layer(model.linear1) is model.linear2
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert len(fused_calls) == 1
    report = {layer.name: layer.reason for layer in model.sparsegemm_report}
    assert "feeds linear2 (through dropout, in eval mode)" in report["linear1"]


def test_an_active_dropout_between_the_pair_runs_the_layers_one_by_one(prune, fused_calls):
    # In training mode (no gradients recorded) the dropout acts: the fused kernel, which
    # skips it, must not run. A dropout of 1 zeroes every activation, so the result is
    # deterministic and the hidden layer's contribution visibly gone.
    model = transformer_layer(prune, dropout=1.0)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        sparsify(model, format="csr")
    x = torch.randn(2, 64, 32)
    with torch.no_grad():
        model.train(), reference.train()
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
        assert fused_calls == []
        model.eval(), reference.eval()
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    assert len(fused_calls) == 1


class TwoUses(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(16, 64), nn.Linear(64, 16)
        self.side = nn.Linear(64, 16)

    def forward(self, x):
        hidden = self.first(x)
        return self.second(hidden) + self.side(hidden)


def test_an_output_used_twice_is_not_linked(prune, fused_calls):
    model = TwoUses().eval()
    for layer in (model.first, model.second, model.side):
        prune(layer, 0.8)
    x = torch.randn(256, 16)
    with torch.no_grad():
        expected = model(x)
        sparsify(model, format="csr")
        assert links.linked_layer(model.first) is None
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert fused_calls == []


def test_a_layer_put_in_the_second_slot_later_is_the_one_that_runs(prune, fused_calls):
    model = sequential_mlp(prune)
    reference = copy.deepcopy(model)
    sparsify(model, format="csr")
    assert isinstance(model[3], nn.Identity)  # its ReLU was fused into layer 2
    model[2] = nn.Sequential(reference[2], nn.ReLU())  # the user puts a dense layer back
    x = torch.randn(300, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    assert len(fused_calls) == 1  # only the (4, 6) pair


def test_auto_layers_fuse_once_decided_and_keep_the_link_when_frozen(prune, fused_calls):
    model = sequential_mlp(prune)
    x = torch.randn(256, 24)
    with torch.no_grad():
        expected = model(x)
        sparsify(model)  # format="auto": decides per row count on the first forward
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        assert fused_calls == []  # the first forward decides, layer by layer
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        assert len(fused_calls) == 2
        freeze(model)
        assert isinstance(model[0], SparseLinear) and isinstance(model[2], SparseLinear)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        assert len(fused_calls) == 4


def test_a_deep_copy_links_its_own_layers(prune):
    model = sparsify(sequential_mlp(prune), format="csr")
    copied = copy.deepcopy(model)
    assert links.linked_layer(copied[0]) is copied[2]
    x = torch.randn(130, 24)
    with torch.no_grad():
        torch.testing.assert_close(copied(x), model(x))


def test_hugging_face_bert_layers_link_intermediate_and_output(fused_calls, pruned_tiny_bert):
    model = pruned_tiny_bert()
    ids = torch.randint(0, 64, (4, 40))
    with torch.no_grad():
        expected = model(ids).last_hidden_state
        keys = set(model.state_dict())
        sparsify(model, format="csr")
        for layer in model.encoder.layer:
            assert links.linked_layer(layer.intermediate.dense) is layer.output.dense
        torch.testing.assert_close(model(ids).last_hidden_state, expected, rtol=1e-4, atol=1e-5)
    assert len(fused_calls) == 2
    assert {key.rsplit(".", 1)[0] for key in model.state_dict()} >= {
        key.rsplit(".", 1)[0] for key in keys if ".dense." not in key}


def test_fuse_feed_forward_false_links_nothing(prune, fused_calls):
    model = sparsify(sequential_mlp(prune), format="csr", fuse_feed_forward=False)
    assert all(links.linked_layer(layer) is None for layer in model)
    with torch.no_grad():
        model(torch.randn(256, 24))
    assert fused_calls == []
    assert not any("feeds" in layer.reason for layer in model.sparsegemm_report)


def test_the_benchmark_checks_and_times_blocks_and_models(benchmark_script, capsys):
    benchmark_script("shared_input")  # feed_forward.py imports its helpers
    script = benchmark_script("feed_forward")
    script.main(["--sparsity", "0.9", "--rounds", "1", "--calls", "1"])
    out = capsys.readouterr().out
    assert out.count("MiniLM") >= 1 and "BERT-base" in out and "HF layer" in out
    gains = [line.split()[-1] for line in out.splitlines() if line.rstrip().endswith("x")]
    assert len(gains) >= 4 and all(float(gain[:-1]) > 0 for gain in gains)


def test_compiled_linked_models_compute_the_same(prune, fused_calls):
    model = sparsify(sequential_mlp(prune), format="csr")
    x = torch.randn(200, 24)
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model, backend="eager", fullgraph=False)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-5)
    assert len(fused_calls) == 2  # the eager call's two pairs; the compiled graph runs the ops


def test_the_e2e_time_breakdown_counts_a_linked_pair_as_sparse(prune, fused_calls):
    from sparsegemm.bench.e2e import layer_time_breakdown

    for kwargs in ({}, {"format": "csr"}):  # AutoSparseLinear layers, SparseLinear layers
        model = sparsify(sequential_mlp(prune), **kwargs)
        x = torch.randn(256, 24)
        with torch.no_grad():
            model(x)
            fused_calls.clear()
            shares = layer_time_breakdown(model, x)
        assert fused_calls  # the pairs ran fused while being timed
        assert shares["sparse_layers_s"] > 0 and shares["dense_layers_s"] == 0


def test_threads_running_one_linked_model_each_get_their_own_output(prune, fused_calls):
    from concurrent.futures import ThreadPoolExecutor

    model = sparsify(sequential_mlp(prune), format="csr")
    reference = sparsify(sequential_mlp(prune), format="csr", fuse_feed_forward=False)
    inputs = [torch.randn(130 + 7 * i, 24) for i in range(24)]
    with torch.no_grad():
        expected = [reference(x) for x in inputs]

        def run(x):
            with torch.no_grad():
                return model(x)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(run, inputs * 4))
    for index, result in enumerate(results):
        torch.testing.assert_close(result, expected[index % len(inputs)], rtol=1e-5, atol=1e-5)
    assert len(fused_calls) == 2 * len(results)
    assert not model[2].__dict__[links._FED_OUTPUT]  # every hand-off was taken


def test_a_linked_model_pickles_after_running(prune, tmp_path):
    model = sparsify(sequential_mlp(prune), format="csr")
    x = torch.randn(150, 24)
    with torch.no_grad():
        expected = model(x)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert links.linked_layer(loaded[0]) is loaded[2]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected)


def test_a_reloaded_state_dict_is_linked_and_fused_again(prune, fused_calls):
    model = sparsify(sequential_mlp(prune), format="csr")
    x = torch.randn(256, 24)
    with torch.no_grad():
        expected = model(x)
    def fresh():
        return nn.Sequential(nn.Linear(24, 96), nn.GELU(), nn.Linear(96, 24), nn.ReLU(),
                             nn.Linear(24, 48), nn.ReLU(), nn.Linear(48, 8)).eval()

    loaded = load_sparsified(fresh(), model.state_dict())
    assert links.linked_layer(loaded[0]) is loaded[2]
    assert loaded[0].activation == "gelu" and isinstance(loaded[1], nn.Identity)
    fused_calls.clear()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected)
    assert len(fused_calls) == 2
    unprepared = load_sparsified(fresh(), model.state_dict(), prepare=False)
    assert links.linked_layer(unprepared[0]) is None and isinstance(unprepared[1], nn.GELU)


def test_from_pretrained_links_and_switches_attention_again(tmp_path, fused_calls,
                                                            pruned_tiny_bert):
    transformers = pytest.importorskip("transformers")
    model = pruned_tiny_bert()
    sparsify(model, format="csr")
    ids = torch.randint(0, 64, (4, 40))
    with torch.no_grad():
        expected = model(ids).last_hidden_state
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(transformers.BertModel, tmp_path).eval()
    for layer in loaded.encoder.layer:
        assert links.linked_layer(layer.intermediate.dense) is layer.output.dense
    assert loaded.config._attn_implementation == "sparsegemm"
    fused_calls.clear()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).last_hidden_state, expected, rtol=1e-4, atol=1e-5)
    assert len(fused_calls) == 2
