import pytest

import torch
from sparsegemm import prune
from torch import nn


def _model_and_eval():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(50, 4)
    with torch.no_grad():
        ref = m(x).argmax(1)

    def eval_fn(model):
        with torch.no_grad():
            return (model(x).argmax(1) == ref).float().mean().item()

    return m, eval_fn


def _zero_fraction(model, layer):
    weight = dict(model.named_modules())[layer].weight
    return (weight == 0).float().mean().item()


def test_each_row_prunes_only_its_layer_to_its_sparsity():
    m, _ = _model_and_eval()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    sps = (0.0, 0.5, 1.0)
    rows = prune.sensitivity_analysis(m, lambda model: _zero_fraction(model, "2"), sps)
    assert [(r["layer"], r["sparsity"]) for r in rows] == [
        (layer, s) for layer in ("0", "2", "4") for s in sps
    ]
    for row in rows:
        expected = row["sparsity"] if row["layer"] == "2" else 0.0
        assert row["metric"] == pytest.approx(expected), row
    # model untouched
    assert not any(hasattr(m[i], "weight_mask") for i in (0, 2, 4))
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k])


def test_the_metric_is_the_eval_of_the_pruned_model():
    m, eval_fn = _model_and_eval()
    rows = prune.sensitivity_analysis(m, eval_fn, (0.0, 1.0), layers=["4"])
    by_sparsity = {r["sparsity"]: r["metric"] for r in rows}
    assert by_sparsity[0.0] == 1.0  # unpruned: agrees with itself
    assert by_sparsity[1.0] < 0.9  # the output layer all zero: argmax of the bias only
    text = prune.format_table(rows, "agreement")
    lines = text.splitlines()
    assert lines[0].startswith("agreement")
    assert lines[1].split() == ["layer", "|", "0%", "100%"]
    assert lines[3].split() == ["4", "|", f"{by_sparsity[0.0]:.4f}", f"{by_sparsity[1.0]:.4f}"]


def test_layers_subset_and_criterion():
    m, _ = _model_and_eval()

    def zeros_are_whole_4x1_blocks(model):
        zero = dict(model.named_modules())["2"].weight.reshape(4, 4, 16) == 0
        return float(bool((zero.all(dim=1) | ~zero.any(dim=1)).all()))

    rows = prune.sensitivity_analysis(m, zeros_are_whole_4x1_blocks, (0.5,),
                                      prune.BlockNorm((4, 1)), layers=["2"])
    assert [(r["layer"], r["metric"]) for r in rows] == [("2", 1.0)]
    fractions = prune.sensitivity_analysis(m, lambda model: _zero_fraction(model, "2"), (0.5,),
                                           prune.BlockNorm((4, 1)), layers=["2"])
    assert fractions[0]["metric"] == pytest.approx(0.5)


def test_plot_png(tmp_path):
    pytest.importorskip("matplotlib")
    m, eval_fn = _model_and_eval()
    rows = prune.sensitivity_analysis(m, eval_fn, (0.0, 0.9), layers=["2", "4"])
    path = prune.plot_sensitivity(rows, str(tmp_path / "sens.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
