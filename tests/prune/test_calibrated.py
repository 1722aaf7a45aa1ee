"""Calibration pruning (Wanda, SparseGPT, OWL) on synthetic layers and a tiny BERT."""

import copy
import math

import pytest

import torch
from sparsegemm import prune
from sparsegemm.prune.calibrated import (
    InputStatistics,
    _groups_by_shared_input,
    parse_pattern,
    retarget_to_dense_inputs,
    select_mask,
    sparsegpt_prune,
    wanda_importance,
)
from torch import nn

pytestmark = pytest.mark.usefixtures("one_thread")

PATTERNS = [None, "2:4", "4:8", (1, 4), (4, 1), (4, 4), (16, 1)]


def _layer_and_inputs(out_features=32, in_features=64, rows=256):
    """A Linear whose inputs have very different scales per feature (as in transformers)."""
    layer = nn.Linear(in_features, out_features)
    scales = torch.logspace(-1.5, 1.5, in_features)[torch.randperm(in_features)]
    x = torch.randn(rows, in_features) * scales
    return layer, x


def _calibrate(layer, x):
    stats = InputStatistics(layer.in_features, hessian=True)
    stats.add(x)
    return stats


def _output_error(layer, weight, x):
    return (x @ (layer.weight.detach() - weight).T).pow(2).sum().item()


def test_wanda_weighs_inputs_where_magnitude_does_not():
    # Column 0 has the smallest weights but by far the loudest input.
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 1.0, 0.9, 0.8], [0.2, 0.7, 1.0, 0.9]]))
    x = torch.randn(64, 4) * torch.tensor([100.0, 1.0, 1.0, 1.0])
    stats = _calibrate(layer, x)
    unstructured = parse_pattern(None)
    wanda = select_mask(wanda_importance(layer.weight.detach(), stats.norms), unstructured, 0.25)
    magnitude = select_mask(layer.weight.detach().abs(), unstructured, 0.25)
    assert not magnitude[:, 0].any()  # magnitude drops the small weights
    assert wanda[:, 0].all()  # Wanda keeps them: their input is 100x louder
    assert _output_error(layer, layer.weight.detach() * wanda, x) < _output_error(
        layer, layer.weight.detach() * magnitude, x)


def test_wanda_importance_is_weight_times_input_norm():
    layer, x = _layer_and_inputs()
    stats = _calibrate(layer, x)
    expected = layer.weight.detach().double().abs() * x.double().norm(dim=0)
    assert torch.allclose(wanda_importance(layer.weight.detach(), stats.norms), expected)
    with pytest.raises(ValueError, match="input norms"):
        wanda_importance(layer.weight.detach(), stats.norms[:-1])


@pytest.mark.parametrize("pattern", [None, "2:4", (4, 1), (1, 4)])
def test_sparsegpt_reconstructs_better_than_magnitude_and_wanda(pattern):
    layer, x = _layer_and_inputs()
    stats = _calibrate(layer, x)
    parsed = parse_pattern(pattern)
    w = layer.weight.detach()
    magnitude = w * select_mask(w.abs(), parsed, 0.5)
    wanda = w * select_mask(wanda_importance(w, stats.norms), parsed, 0.5)
    updated, keep = sparsegpt_prune(w, stats.hessian, parsed, 0.5)
    assert torch.equal(updated != 0, keep & (w != 0))
    err_sparsegpt = _output_error(layer, updated, x)
    assert err_sparsegpt < _output_error(layer, wanda, x) < _output_error(layer, magnitude, x)


def _check_pattern(keep: torch.Tensor, pattern, amount: float):
    parsed = parse_pattern(pattern)
    rows, cols = keep.shape
    if parsed.kind == "n:m":
        groups = keep.reshape(rows, cols // parsed.m, parsed.m).sum(dim=2)
        assert torch.all(groups == parsed.n), "every group of M keeps exactly N"
    elif parsed.kind == "block":
        r, c = parsed.block
        blocks = keep.reshape(rows // r, r, cols // c, c).permute(0, 2, 1, 3).reshape(
            rows // r, cols // c, r * c)
        assert torch.all(blocks.all(dim=2) | ~blocks.any(dim=2)), "blocks are all kept or all cut"
        kept_per_block_row = blocks.all(dim=2).sum(dim=1)
        assert torch.all(kept_per_block_row == cols // c - round(amount * (cols // c)))
    else:
        assert torch.all(keep.sum(dim=1) == cols - round(amount * cols))


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_every_method_respects_every_pattern(method, pattern):
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 64))
    calibration = [torch.randn(16, 64) for _ in range(2)]
    done = prune.prune_pretrained(model, calibration, 0.5, method=method, pattern=pattern)
    assert list(done) == ["0", "2"]
    for layer in (model[0], model[2]):
        assert hasattr(layer, "weight_orig") and hasattr(layer, "weight_mask")
        _check_pattern(layer.weight_mask.bool(), pattern, 0.5)
        assert torch.equal(layer.weight == 0, layer.weight_mask == 0)


def test_blocks_are_calibrated_on_the_pruned_outputs_before_them():
    model = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 8))
    dense_first = nn.Linear(16, 32)
    dense_first.load_state_dict(model[0].state_dict())
    x = torch.randn(128, 16)
    prune.prune_pretrained(model, [x], 0.75, method="wanda")
    unstructured = parse_pattern(None)

    def second_mask(first):
        with torch.no_grad():
            norms = first(x).norm(dim=0)
        w = model[1].weight_orig.detach()
        return select_mask(wanda_importance(w, norms), unstructured, 0.75)

    from_dense = second_mask(dense_first)
    from_pruned = second_mask(model[0])
    assert not torch.equal(from_dense, from_pruned)  # the test can tell them apart
    assert torch.equal(model[1].weight_mask.bool(), from_pruned)


def test_sparsegpt_keeps_an_existing_mask():
    layer, x = _layer_and_inputs()
    stats = _calibrate(layer, x)
    prior = torch.rand(layer.weight.shape) > 0.3
    _, keep = sparsegpt_prune(layer.weight.detach(), stats.hessian, parse_pattern(None), 0.6,
                              keep=prior)
    assert not (keep & ~prior).any()
    assert abs((~keep).float().mean().item() - 0.6) < 0.05


def test_sparsegpt_handles_inputs_that_never_fire():
    layer, x = _layer_and_inputs()
    x[:, :5] = 0
    updated, _ = sparsegpt_prune(layer.weight.detach(), _calibrate(layer, x).hessian,
                                 parse_pattern("2:4"), 0.5)
    assert torch.isfinite(updated).all()
    assert (updated[:, :5] == 0).all()


def test_owl_sparsities_keep_the_mean_and_favour_outliers():
    sparsities = prune.owl_sparsities([0.01, 0.05, 0.03], 0.7, spread=0.1)
    assert sparsities[1] < sparsities[2] < sparsities[0]
    assert math.isclose(sum(sparsities) / 3, 0.7)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.2)
    weighted = prune.owl_sparsities([0.0, 1.0], 0.5, spread=0.1, sizes=[3, 1])
    assert math.isclose((3 * weighted[0] + weighted[1]) / 4, 0.5)
    assert prune.owl_sparsities([0.2, 0.2], 0.6) == [0.6, 0.6]


def test_owl_prunes_the_block_with_outliers_less():
    quiet = nn.Linear(32, 32)
    loud = nn.Linear(32, 32)
    with torch.no_grad():
        loud.weight[:, :2] *= 50  # a few huge weights: Wanda-score outliers
    model = nn.Sequential(quiet, loud)
    done = prune.prune_pretrained(model, [torch.randn(64, 32)], 0.6, method="wanda",
                                  allocation="owl", owl_spread=0.1)
    assert done["1"] < 0.6 < done["0"]
    assert done["0"] + done["1"] == pytest.approx(1.2)
    for name, layer in (("0", quiet), ("1", loud)):
        assert (layer.weight_mask == 0).float().mean().item() == pytest.approx(done[name], abs=0.02)


class _Block(nn.Module):
    """A transformer-like block taking the hidden state and a keyword argument."""

    def __init__(self, width):
        super().__init__()
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, hidden, *, gate):
        return (hidden + self.down(torch.relu(self.up(hidden))) * gate, "extra output")


class _TinyTransformer(nn.Module):
    def __init__(self, width=16, depth=3):
        super().__init__()
        self.embed = nn.Linear(4, width)
        self.layers = nn.ModuleList(_Block(width) for _ in range(depth))
        self.head = nn.Linear(width, 2)

    def forward(self, features, gate):
        hidden = self.embed(features)
        for layer in self.layers:
            hidden = layer(hidden, gate=gate)[0]
        return self.head(hidden)


def test_blocks_of_a_transformer_take_keyword_inputs_and_sparsify_converts_them():
    from sparsegemm.torch import SparseLinear, sparsify

    model = _TinyTransformer().eval()
    assert [n for n, _ in prune.find_blocks(model)] == ["layers.0", "layers.1", "layers.2"]
    batches = [{"features": torch.randn(2, 5, 4), "gate": torch.tensor(0.5)} for _ in range(2)]
    done = prune.prune_pretrained(model, batches, 0.8, method="sparsegpt", pattern=(4, 1))
    assert sorted(done) == [f"layers.{i}.{p}" for i in range(3) for p in ("down", "up")]
    assert not hasattr(model.embed, "weight_mask") and not hasattr(model.head, "weight_mask")
    with torch.no_grad():
        expected = model(**batches[0])
        sparsify(model, format="csr", min_sparsity=0.5)
        assert sum(isinstance(m, SparseLinear) for m in model.modules()) == 6
        torch.testing.assert_close(model(**batches[0]), expected, rtol=1e-5, atol=1e-5)


def _tiny_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=32)
    return transformers.BertModel(config).eval()


def _token_batches(count=3):
    return [{"input_ids": torch.randint(0, 64, (2, 12)),
             "attention_mask": torch.ones(2, 12, dtype=torch.long)} for _ in range(count)]


@pytest.mark.slow  # importing transformers alone takes long on a loaded machine
def test_bert_is_pruned_layer_by_layer_and_sparsify_converts_it():
    from sparsegemm.torch import SparseLinear, sparsify

    model = _tiny_bert()
    assert [name for name, _ in prune.find_blocks(model)] == ["encoder.layer.0", "encoder.layer.1"]
    done = prune.prune_pretrained(model, _token_batches(), 0.8, method="sparsegpt")
    assert len(done) == 12 and all(v == 0.8 for v in done.values())
    assert not hasattr(model.pooler.dense, "weight_mask")  # outside the blocks: dense
    batch = _token_batches(1)[0]
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
        sparsify(model, format="csr", min_sparsity=0.5)
        assert sum(isinstance(m, SparseLinear) for m in model.modules()) == 12
        torch.testing.assert_close(model(**batch).last_hidden_state, expected,
                                   rtol=1e-4, atol=1e-4)


def test_wanda_criterion_in_prune_model():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    data = [torch.randn(32, 8)]
    prune.prune_model(model, 0.5, prune.Wanda(data), scope="layer", skip_first_last=False)
    norms = data[0].norm(dim=0)
    expected = select_mask(wanda_importance(model[0].weight_orig.detach(), norms).reshape(1, -1),
                           parse_pattern(None), 0.5).reshape(16, 8)
    assert torch.equal(model[0].weight_mask.bool(), expected)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="obs"), ValueError, "method must be"),
        (dict(allocation="random"), ValueError, "allocation must be"),
        (dict(pattern="2-4"), ValueError, "unknown pattern"),
        (dict(pattern="3:2"), ValueError, "0 < N <= M"),
        (dict(pattern=(0, 4)), ValueError, "positive"),
        (dict(pattern="2:4", allocation="owl"), ValueError, "OWL"),
        (dict(amount=1.5), ValueError, "fractional amount"),
        (dict(blocks=["nope"]), KeyError, "nope"),
        (dict(sequential="module"), ValueError, "sequential must be"),
        (dict(reconstruct="output"), ValueError, "reconstruct must be"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, error, match):
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    with pytest.raises(error, match=match):
        prune.prune_pretrained(model, [torch.randn(4, 8)], **kwargs)


def test_empty_calibration_and_models_without_blocks_are_rejected():
    with pytest.raises(ValueError, match="calibration data is empty"):
        prune.prune_pretrained(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)), [])

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x)

    with pytest.raises(ValueError, match="pass blocks="):
        prune.prune_pretrained(Plain(), [torch.randn(2, 4)])
    done = prune.prune_pretrained(Plain(), [torch.randn(2, 4)], blocks=["a"])
    assert list(done) == ["a"]


def test_bias_correction_keeps_the_mean_output_on_calibration_inputs():
    model = nn.Sequential(nn.Linear(32, 16), nn.Linear(16, 16))
    x = torch.randn(256, 32) + 3.0  # inputs with a large mean
    with torch.no_grad():
        dense_mean = model[0](x).mean(dim=0)
    uncorrected_model = copy.deepcopy(model)
    prune.prune_pretrained(uncorrected_model, [x], 0.7,
                           method="wanda")
    prune.prune_pretrained(model, [x], 0.7, method="wanda", bias_correction=True)
    with torch.no_grad():
        corrected = model[0](x).mean(dim=0)
        uncorrected = uncorrected_model[0](x).mean(dim=0)
    assert torch.allclose(corrected, dense_mean, atol=1e-4)
    assert not torch.allclose(uncorrected, dense_mean, atol=1e-2)


class _AttentionLikeBlock(nn.Module):
    """q, k and v read the same input; then an output projection and a feed-forward pair."""

    def __init__(self, width=8):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        self.o = nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x):
        attended = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2), -1) @ self.v(x)
        h = x + self.o(attended)
        return h + self.down(torch.relu(self.up(h)))


def test_layers_that_share_an_input_form_one_group_in_call_order():
    block = _AttentionLikeBlock()
    layers = dict(block.named_children())
    groups = _groups_by_shared_input(block, layers, [((torch.randn(2, 5, 8),), {})])
    assert [sorted(g) for g in groups] == [["k", "q", "v"], ["o"], ["up"], ["down"]]


@pytest.mark.parametrize("sequential", ["layer", "block"])
def test_layer_sequential_calibrates_each_layer_on_the_pruned_ones_before_it(sequential):
    block = _Block(16)
    dense_up = copy.deepcopy(block.up)
    x = torch.randn(64, 16)
    gate = torch.tensor(1.0)

    class Wrapped(nn.Module):  # the block takes a keyword; the blocks are model.0
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([block])

        def forward(self, x):
            return self.blocks[0](x, gate=gate)

    prune.prune_pretrained(Wrapped(), [x], 0.75, method="wanda", sequential=sequential,
                           blocks=["blocks.0"])

    def down_mask(up):
        with torch.no_grad():
            norms = torch.relu(up(x)).norm(dim=0)
        w = block.down.weight_orig.detach()
        return select_mask(wanda_importance(w, norms), parse_pattern(None), 0.75)

    expected = down_mask(block.up if sequential == "layer" else dense_up)
    assert not torch.equal(down_mask(block.up), down_mask(dense_up))  # the test can tell
    assert torch.equal(block.down.weight_mask.bool(), expected)


def test_retargeting_is_the_identity_where_inputs_agree_and_fits_dense_outputs_otherwise():
    torch.manual_seed(0)
    weight = torch.randn(6, 10, dtype=torch.float64)
    x_pruned = torch.randn(200, 10, dtype=torch.float64)
    same = InputStatistics(10, hessian=True)
    same.add(x_pruned)
    same.add_cross(x_pruned, x_pruned)
    torch.testing.assert_close(retarget_to_dense_inputs(weight, same, 0.1, "diagonal"), weight)

    # a drift the pruned inputs can represent: the dense outputs are reachable exactly
    x_dense = x_pruned @ (torch.eye(10, dtype=torch.float64)
                          + 0.3 * torch.randn(10, 10, dtype=torch.float64))
    drifted = InputStatistics(10, hessian=True)
    drifted.add(x_pruned)
    drifted.add_cross(x_dense, x_pruned)
    target = x_dense @ weight.T

    def error(w):
        return (target - x_pruned @ w.T).norm().item()

    retargeted = retarget_to_dense_inputs(weight, drifted, 0.0, "diagonal")
    least_squares = torch.linalg.lstsq(x_pruned, target).solution.T
    torch.testing.assert_close(retargeted, least_squares)
    assert error(retargeted) < 1e-9 * error(weight)


def test_sparsegpt_reconstructs_the_dense_models_outputs_by_default():
    torch.manual_seed(0)
    model = _TinyTransformer(width=16, depth=3).eval()
    dense = copy.deepcopy(model)
    batches = [{"features": torch.randn(4, 6, 4), "gate": torch.tensor(0.5)} for _ in range(4)]
    errors = {}
    for reconstruct in ("dense", "pruned"):
        pruned = copy.deepcopy(model)
        prune.prune_pretrained(pruned, batches, 0.6, method="sparsegpt", reconstruct=reconstruct)
        with torch.no_grad():
            errors[reconstruct] = sum(
                (pruned(**b) - dense(**b)).pow(2).sum().item() for b in batches)
    assert errors["dense"] < errors["pruned"]
