"""benchmarks/prune_digits.py's speed columns: sparsify after prune.remove, honest table."""

import importlib

import pytest

torch = pytest.importorskip("torch")
from sparsegemm.torch import SparseConv2d, SparseLinear
from torch import nn


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("prune_digits")


def pruned_cnn(bench, prune):
    torch.manual_seed(0)
    model = bench.make_cnn().eval()
    prune(model[4], 0.9)  # conv2
    prune(model[9], 0.9)  # the first Linear
    return model


def _conv_timing(monkeypatch, fmt, speedup):
    """Stand-in for timing a convolution on its real input (sparsify times convs itself)."""
    from sparsegemm.torch._format_choice import FormatChoice

    sparsify_module = importlib.import_module("sparsegemm.torch.sparsify")

    monkeypatch.setattr(sparsify_module, "_time_convolution",
                        lambda module, x: FormatChoice(fmt, speedup=speedup))


def test_speed_hook_uses_each_layers_batch_and_reports(bench, prune, planner_times, monkeypatch):
    timer = planner_times(dense=1.0, csr=0.5)  # CSR measured 2x faster everywhere
    _conv_timing(monkeypatch, "csr", 2.0)
    model = pruned_cnn(bench, prune)
    x = torch.randn(32, 64)
    sparse, speed = bench.speed_hook(model, x, repeats=2, calls=1)
    assert isinstance(sparse[4], SparseConv2d) and isinstance(sparse[9], SparseLinear)
    assert isinstance(model[4], nn.Conv2d)  # the pruned model itself is left alone
    torch.testing.assert_close(sparse(x), model(x), rtol=1e-4, atol=1e-5)
    # Under 'auto' every layer is a candidate: the unpruned first conv is timed too (and the
    # stand-in timing says CSR wins); the unpruned last Linear measures no gain.
    assert speed.converted == 3 and speed.candidates == 4, speed.report
    assert isinstance(sparse[11], nn.Linear)
    assert speed.speedup == pytest.approx(speed.dense_ms / speed.sparse_ms)
    # conv2 sees 32 images x 8x8 pixels, the Linear 32 rows: planned at those batches
    assert bench._product_rows(model, x) == {"1": 32 * 64, "4": 32 * 64, "9": 32, "11": 32}
    assert len(timer.timed) >= 1  # the Linear; the convolution is timed as itself
    assert "planned at 32 rows" in speed.report and "timed on input" in speed.report


def test_table_claims_no_speedup_when_the_planner_keeps_layers_dense(bench, prune,
                                                                      planner_times, monkeypatch):
    planner_times(dense=1.0, csr=3.0, bsr4x1=3.0, bsr8x1=3.0, bsr16x1=3.0, bsr4x4=3.0)
    _conv_timing(monkeypatch, "dense", 0.5)
    model = pruned_cnn(bench, prune)
    _, speed = bench.speed_hook(model, torch.randn(8, 64), repeats=1, calls=1)
    assert speed.converted == 0 and speed.speedup is None
    assert "no gain" in speed.report
    row = {"model": "cnn", "config": "unstructured-90", "sparsity": 0.9, "total": 0.8,
           "params": 10, "acc": 99.0, "drop": 0.0, "floor": 1.0, "speed": speed}
    line = bench.format_rows([row]).splitlines()[2]
    assert "none" in line and "0/4" in line and line.rstrip().endswith("0/4")
