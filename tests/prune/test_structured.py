"""prune_structure: FFN neurons and attention heads removed from transformer blocks, thinned."""

import copy

import pytest

import torch
from sparsegemm import prune
from torch import nn

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_bert(heads=4, hidden=32, intermediate=48):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=32,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


def _batches(count=4, rows=3, length=10):
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        ids = torch.randint(0, 64, (rows, length), generator=generator)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return out


def _output(model, batch):
    with torch.no_grad():
        return model(**batch).last_hidden_state


def _masked_reference(model, layouts_removed):
    """The unthinned model with the removed units silenced by zeros (no compensation)."""
    reference = copy.deepcopy(model)
    layouts = prune.block_layouts(reference)
    with torch.no_grad():
        for layout, (neurons, heads) in zip(layouts, layouts_removed):
            layout.ffn_up.weight[neurons] = 0
            layout.ffn_up.bias[neurons] = 0  # GELU(0) = 0: the neuron adds nothing
            size = layout.head_size
            for head in heads:
                columns = slice(head * size, (head + 1) * size)
                layout.attention_out.weight[:, columns] = 0
    return reference


def test_layouts_of_a_bert_block():
    model = _tiny_bert()
    layouts = prune.block_layouts(model)
    assert len(layouts) == 2
    first = layouts[0]
    block = model.encoder.layer[0]
    assert first.ffn_up is block.intermediate.dense and first.ffn_down is block.output.dense
    assert first.qkv == (
        block.attention.self.query,
        block.attention.self.key,
        block.attention.self.value,
    )
    assert first.attention_out is block.attention.output.dense
    assert first.heads == 4 and first.head_size == 8


def test_thinned_model_equals_the_masked_model_without_compensation():
    model = _tiny_bert()
    calibration = _batches()
    thinned = prune.prune_structure(model, calibration, 0.5, compensate=False)
    # recover which units were kept from the thinned shapes and the scores' choice
    removed = []
    for original, small in zip(prune.block_layouts(model), prune.block_layouts(thinned)):
        assert small.ffn_up.out_features == 24 and small.ffn_down.in_features == 24
        assert small.heads == 2 and small.qkv[0].out_features == 16
        kept_neurons = [
            int(torch.nonzero((original.ffn_up.weight == row).all(1))[0])
            for row in small.ffn_up.weight
        ]
        neurons = sorted(set(range(48)) - set(kept_neurons))
        kept_rows = [
            int(torch.nonzero((original.qkv[0].weight == row).all(1))[0])
            for row in small.qkv[0].weight
        ]
        heads = sorted(set(range(4)) - {r // 8 for r in kept_rows})
        removed.append((neurons, heads))
    reference = _masked_reference(model, removed)
    for batch in _batches(2, rows=2, length=7):
        torch.testing.assert_close(_output(thinned, batch), _output(reference, batch))
    assert sum(p.numel() for p in thinned.parameters()) < sum(
        p.numel() for p in model.parameters()
    )


def test_the_model_itself_is_left_untouched():
    model = _tiny_bert()
    before = {name: p.clone() for name, p in model.named_parameters()}
    prune.prune_structure(model, _batches(), 0.5)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def test_compensation_lowers_the_error_on_calibration_inputs():
    model = _tiny_bert()
    calibration = _batches()
    errors = {}
    for compensate in (False, True):
        thinned = prune.prune_structure(model, calibration, 0.5, compensate=compensate)
        errors[compensate] = sum(
            float((_output(thinned, b) - _output(model, b)).pow(2).sum()) for b in calibration
        )
    assert errors[True] < errors[False]


def test_scores_keep_the_units_that_matter():
    """A neuron whose down-projection column is scaled up is kept; one scaled to ~0 goes."""
    model = _tiny_bert()
    layout = prune.block_layouts(model)[0]
    with torch.no_grad():
        layout.ffn_down.weight[:, 5] *= 100.0
        layout.ffn_down.weight[:, 7] *= 1e-4
    thinned = prune.prune_structure(model, _batches(), 0.5, head_amount=0)
    small = prune.block_layouts(thinned)[0]
    rows = [
        int(torch.nonzero((layout.ffn_up.weight == row).all(1))[0]) for row in small.ffn_up.weight
    ]
    assert 5 in rows and 7 not in rows
    assert small.heads == 4  # head_amount=0 leaves the heads alone


def test_zero_amount_changes_nothing():
    model = _tiny_bert()
    thinned = prune.prune_structure(model, _batches(), 0.0)
    batch = _batches(1)[0]
    torch.testing.assert_close(_output(thinned, batch), _output(model, batch))


def test_at_least_one_head_is_kept():
    model = _tiny_bert(heads=2)
    thinned = prune.prune_structure(model, _batches(), 0.9, head_amount=0.99)
    assert all(layout.heads == 1 for layout in prune.block_layouts(thinned))
    _output(thinned, _batches(1)[0])


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5])
def test_bad_amounts_are_refused(amount):
    with pytest.raises(ValueError, match="must be in"):
        prune.prune_structure(_tiny_bert(), _batches(), amount)


def test_empty_calibration_is_refused():
    with pytest.raises(ValueError, match="calibration"):
        prune.prune_structure(_tiny_bert(), [], 0.5)


class _FFNOnlyBlock(nn.Module):
    def __init__(self, width=8, hidden=16):
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(x)))


def test_ffn_only_blocks_need_head_amount_zero():
    model = nn.Sequential(_FFNOnlyBlock(), _FFNOnlyBlock())
    data = [torch.randn(5, 8) for _ in range(3)]
    with pytest.raises(ValueError, match="head_amount"):
        prune.prune_structure(model, data, 0.5)
    thinned = prune.prune_structure(model, data, 0.5, head_amount=0)
    assert thinned[0].up.out_features == 8 and thinned[1].down.in_features == 8


def test_a_block_without_an_ffn_pair_is_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 6))
    with pytest.raises(ValueError, match="FFN pair"):
        prune.prune_structure(model, [torch.randn(2, 4)], 0.5, head_amount=0)


def test_a_model_thinned_to_a_square_ffn_keeps_its_layout():
    """48 -> 32 hidden units, as wide as the model: the FFN pair is still found."""
    model = _tiny_bert(hidden=32, intermediate=48)
    thinned = prune.prune_structure(model, _batches(), 1 / 3, head_amount=0)
    layouts = prune.block_layouts(thinned)
    assert [layout.ffn_up.out_features for layout in layouts] == [32, 32]
    assert all(layout.ffn_down.in_features == 32 for layout in layouts)
    again = prune.prune_structure(thinned, _batches(), 0.5, head_amount=0)
    assert [layout.ffn_up.out_features for layout in prune.block_layouts(again)] == [16, 16]
