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


def test_table_shape_and_values():
    m, eval_fn = _model_and_eval()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    sps = (0.0, 0.5, 1.0)
    rows = prune.sensitivity_analysis(m, eval_fn, sps)
    assert len(rows) == 3 * len(sps)
    assert [r["layer"] for r in rows] == ["0"] * 3 + ["2"] * 3 + ["4"] * 3
    assert all(set(r) == {"layer", "sparsity", "metric"} for r in rows)
    assert all(r["metric"] == 1.0 for r in rows if r["sparsity"] == 0.0)
    # model untouched
    assert not any(hasattr(m[i], "weight_mask") for i in (0, 2, 4))
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k])
    text = prune.format_table(rows, "agreement")
    lines = text.splitlines()
    assert lines[0].startswith("agreement")
    assert len(lines) == 3 + 3  # title, header, rule, 3 layers
    assert "50%" in lines[1]


def test_layers_subset_and_criterion():
    m, eval_fn = _model_and_eval()
    rows = prune.sensitivity_analysis(m, eval_fn, (0.5,), prune.BlockNorm((4, 1)), layers=["2"])
    assert len(rows) == 1 and rows[0]["layer"] == "2"


def test_plot_png(tmp_path):
    pytest.importorskip("matplotlib")
    m, eval_fn = _model_and_eval()
    rows = prune.sensitivity_analysis(m, eval_fn, (0.0, 0.9), layers=["2", "4"])
    path = prune.plot_sensitivity(rows, str(tmp_path / "sens.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
