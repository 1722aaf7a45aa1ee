"""End-to-end suite plumbing: skipped cleanly without sparsify, checked and timed with one."""

import sys
import types

import numpy as np
import pytest

from sparsegemm.bench import e2e
from sparsegemm.bench.harness import HarnessSettings
from sparsegemm.bench.workloads import Pattern

FAST = HarnessSettings(rounds=2, target_block_s=0.0002, max_calls=2, sleep_s=0.0, max_remeasure=0)


def _tiny_mlp():
    import torch
    from torch import nn

    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)), torch.randn(4, 16)


TINY = (e2e.E2EModel("tiny mlp", _tiny_mlp, 32),)


def test_skipped_with_a_clear_note_when_sparsify_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "sparsegemm.torch", None)  # import fails
    rows, notes = e2e.run_e2e((0.5,), Pattern(), 1, FAST, models=TINY)
    assert rows == []
    assert len(notes) == 1 and "skipped" in notes[0] and "sparsify" in notes[0]


@pytest.mark.torch
def test_runs_checks_and_times_with_a_sparsify(monkeypatch):
    pytest.importorskip("torch")
    calls = []

    def identity_sparsify(model, **options):
        calls.append(options.get("format", "no arguments"))
        return model

    def wrong_sparsify(model, format="auto", **options):
        with __import__("torch").no_grad():
            model[0].weight.mul_(2)
        # in place

    for sparsify, status in ((identity_sparsify, "ok"), (wrong_sparsify, "wrong")):
        fake = types.ModuleType("sparsegemm.torch")
        fake.sparsify = sparsify
        monkeypatch.setitem(sys.modules, "sparsegemm.torch", fake)
        rows, notes = e2e.run_e2e((0.5, 0.9), Pattern(), 1, FAST, models=TINY)
        assert notes == []
        assert len(rows) == 6  # 2 sparsities x formats default, auto, csr
        assert {r["status"] for r in rows} == {status}, rows
        if status == "ok":
            assert all(r["speedup"] > 0 and r["max_rel_error"] < 1e-5 for r in rows)
            # No sparse layers: the time splits between dense layers and the rest.
            assert all(r["sparse_layers_s"] == 0 and r["dense_layers_s"] > 0 for r in rows)
        else:
            assert all(np.isnan(r["speedup"]) for r in rows)
    assert calls == ["no arguments", "auto", "csr"] * 2
    assert "tiny mlp" in e2e.e2e_table(rows)


@pytest.mark.torch
def test_setup_time_counts_the_first_forward_where_default_layers_plan(monkeypatch):
    pytest.importorskip("torch")
    import time

    planning_s = 0.05

    def sparsify_planning_on_first_forward(model, **options):
        def plan_once(module, inputs):
            time.sleep(planning_s)
            handle.remove()
        handle = model.register_forward_pre_hook(plan_once)

    fake = types.ModuleType("sparsegemm.torch")
    fake.sparsify = sparsify_planning_on_first_forward
    monkeypatch.setitem(sys.modules, "sparsegemm.torch", fake)
    rows, _ = e2e.run_e2e((0.9,), Pattern(), 1, FAST, models=TINY, formats=("default",))
    assert rows[0]["setup_s"] >= planning_s
    assert rows[0]["sparse_time_s"] < planning_s  # planned once, not on every call
    assert f"{rows[0]['setup_s']:.1f}s" in e2e.e2e_table(rows)


def test_setup_text_shows_deepsparse_compile_beside_ours():
    assert e2e._setup_text({}) == "-"
    assert e2e._setup_text({"setup_s": 7.23}) == "7.2s"
    assert e2e._setup_text({"setup_s": 7.23, "deepsparse_setup_s": 41.0}) == "7.2s (41.0s)"


@pytest.mark.torch
def test_prune_model_zeroes_the_requested_fraction():
    torch = pytest.importorskip("torch")
    model = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    e2e.prune_model(model, 0.75, Pattern())
    for weight in (model.linear1.weight, model.linear2.weight, model.self_attn.in_proj_weight):
        assert (weight == 0).float().mean().item() == pytest.approx(0.75, abs=0.01)


@pytest.mark.torch
def test_cli_e2e_only_writes_its_files(monkeypatch, tmp_path, capsys):
    pytest.importorskip("torch")
    from sparsegemm.bench.cli import main

    fake = types.ModuleType("sparsegemm.torch")
    fake.sparsify = lambda model, format="auto", **options: model
    monkeypatch.setitem(sys.modules, "sparsegemm.torch", fake)
    monkeypatch.setattr(e2e, "MODELS", TINY)
    assert (
        main(
            [
                "bench",
                "--e2e-only",
                "--sparsity",
                "0.9",
                "--repeats",
                "2",
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "tiny mlp" in capsys.readouterr().out
    assert (tmp_path / "e2e.csv").read_text().startswith("model,input_shape,sparsity")
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.torch
@pytest.mark.parametrize("pattern", [Pattern(), Pattern((4, 1))])
def test_options_are_ones_the_real_sparsify_accepts(pattern):
    pytest.importorskip("torch")
    import inspect

    from sparsegemm.torch import sparsify

    accepted = inspect.signature(sparsify).parameters
    for fmt in ("auto", "csr", "bsr"):
        options = e2e.sparsify_options(fmt, pattern, 64)
        assert set(options) <= set(accepted), options
        assert options["format"] == fmt
    assert e2e.sparsify_options("bsr", pattern, 64).get("blocksize") == pattern.blocksize
    assert e2e.sparsify_options("auto", pattern, 64)["batch_hint"] == 64
    assert e2e.sparsify_options("default", pattern, 64) == {}


@pytest.mark.torch
def test_runs_with_the_real_sparsify_for_csr_and_bsr():
    pytest.importorskip("torch")
    rows, notes = e2e.run_e2e((0.9,), Pattern((4, 1)), 1, FAST, models=TINY, formats=("csr", "bsr"))
    assert notes == []
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    assert "bsr4x1" in rows[1]["report"] and "csr" in rows[0]["report"]
    assert all(r["sparse_layers_s"] > 0 for r in rows)
    assert "sparse" in e2e.e2e_table(rows)
    # quantize_dynamic, the no-pruning alternative, ran in the same rounds
    for row in rows:
        assert row["int8_dyn_speedup"] > 0
        assert row["vs_int8_dyn"] == pytest.approx(
            row["speedup"] / row["int8_dyn_speedup"], rel=1e-9
        )


@pytest.mark.torch
def test_int8_alternative_is_checked_and_skipped_without_a_linear():
    torch = pytest.importorskip("torch")
    model, x = _tiny_mlp()
    reference = model(x).double().detach().numpy()
    quantized, note = e2e.int8_dynamic_model(model, x, reference)
    assert quantized is not None and note == ""
    assert isinstance(quantized[0], torch.ao.nn.quantized.dynamic.Linear)
    _, note = e2e.int8_dynamic_model(model, x, 3.0 * reference)  # a wrong reference
    assert "off" in note
    class ReadsWeight(torch.nn.Module):  # like a fused fast path: reads .weight directly
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(16, 8)

        def forward(self, x):
            return x @ self.linear.weight.T

    quantized, note = e2e.int8_dynamic_model(ReadsWeight(), x, reference)
    assert quantized is None and "does not run" in note
    # nn.TransformerEncoderLayer's fast path would read the quantized weights: kept off it.
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    tokens = torch.randn(1, 6, 32)
    with torch.no_grad():
        quantized, note = e2e.int8_dynamic_model(layer, tokens, layer(tokens).double().numpy())
    assert quantized is not None and note == ""
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    assert e2e.int8_dynamic_model(conv, torch.randn(1, 3, 8, 8), reference) == (
        None,
        "no Linear to quantize",
    )


@pytest.mark.torch
def test_default_format_decides_on_the_check_and_deepsparse_is_skipped_with_a_note(tmp_path):
    pytest.importorskip("torch")
    tiny = e2e.E2EModel("tiny mlp", _tiny_mlp, 32, exportable=True)
    missing = str(tmp_path / "no-such-python")
    rows, notes = e2e.run_e2e((0.9,), Pattern(), 1, FAST, models=(tiny,), formats=("default",),
                              deepsparse_python=missing)
    assert [r["status"] for r in rows] == ["ok"], rows
    assert "rows 4:" in rows[0]["report"]  # decided on the output check, shown in the report
    assert notes == [f"DeepSparse skipped: {missing} does not exist"]
    assert "deepsparse_speedup" not in rows[0]


def test_hf_bert_layer_is_exportable_and_floors_follow_sparsity():
    by_key = e2e.MODELS_BY_KEY
    assert by_key["hfbert"].exportable and by_key["mlp"].exportable
    assert not by_key["bert"].exportable  # nn.TransformerEncoderLayer: fused fast path
    assert by_key["mlp"].floor_for(0.9) == 5.0 and by_key["mlp"].floor_for(0.7) == 2.5
    assert by_key["hfbert"].floor_for(0.7) == 1.8 and by_key["bert"].floor_for(0.7) is None


@pytest.mark.torch
def test_hf_bert_layer_keeps_its_gelu_a_module_that_sparsify_fuses():
    torch = pytest.importorskip("torch")
    from sparsegemm.torch import sparsify
    from torch import nn

    torch.manual_seed(0)
    model, x = e2e.MODELS_BY_KEY["hfbert"].build()
    model.eval()
    e2e.prune_model(model, 0.9, Pattern())
    with torch.no_grad():
        expected = model(x)
    sparsify(model, format="csr")
    assert model.intermediate.activation == "gelu"
    assert isinstance(model.intermediate_act_fn, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.torch
def test_torch_end_to_end_script_wraps_the_suite(monkeypatch, capsys, benchmark_script):
    pytest.importorskip("torch")
    script = benchmark_script("torch_end_to_end")
    tiny = e2e.E2EModel("tiny mlp", _tiny_mlp, 32, "tiny", 3.0, 4)
    monkeypatch.setattr(script, "MODELS_BY_KEY", {"tiny": tiny})
    assert script.main(["tiny", "--repeats", "1", "--threads", "1", "--formats", "csr"]) == 0
    out = capsys.readouterr().out
    assert "tiny mlp" in out and "matched" in out and "3x" in out
    with pytest.raises(SystemExit):
        script.main(["nonexistent"])


@pytest.mark.torch
def test_deepsparse_contender_when_a_venv_is_given(monkeypatch):
    """Runs only with SPARSEGEMM_DEEPSPARSE_PYTHON set (DeepSparse needs its own venv)."""
    import os

    python = os.environ.get("SPARSEGEMM_DEEPSPARSE_PYTHON")
    if not python:
        pytest.skip("set SPARSEGEMM_DEEPSPARSE_PYTHON to a python with DeepSparse")
    pytest.importorskip("torch")
    tiny = e2e.E2EModel("tiny mlp", _tiny_mlp, 32, exportable=True)
    rows, notes = e2e.run_e2e((0.9,), Pattern(), 1, FAST, models=(tiny,), formats=("csr",),
                              deepsparse_python=python)
    assert rows[0]["deepsparse_speedup"] > 0, notes
    assert rows[0]["vs_deepsparse"] == pytest.approx(rows[0]["speedup"]
                                                     / rows[0]["deepsparse_speedup"])
    assert any(note.startswith("DeepSparse 1.") for note in notes)


def test_default_versus_told_line():
    rows = [{"model": "m", "sparsity": 0.9, "pattern": "unstructured", "format": fmt,
             "status": "ok", "speedup": speedup}
            for fmt, speedup in (("default", 2.7), ("auto", 3.0), ("csr", 1.0))]
    assert e2e.default_versus_told(rows) == [
        "default / told speedup, m at 0.90 unstructured: 0.90 (meets 0.9)"
    ]
    rows[0]["speedup"] = 2.0
    assert "BELOW" in e2e.default_versus_told(rows)[0]
    assert e2e.default_versus_told(rows[1:]) == []


def test_default_versus_told_keeps_each_pattern_apart():
    """With two patterns in one run, the second's rows used to overwrite the first's."""
    rows = [{"model": "m", "sparsity": 0.9, "pattern": pattern, "format": fmt, "status": "ok",
             "speedup": speedup}
            for pattern, fmt, speedup in (("unstructured", "default", 2.0),
                                          ("unstructured", "auto", 4.0),
                                          ("block:4x1", "default", 3.0),
                                          ("block:4x1", "auto", 3.0))]
    assert e2e.default_versus_told(rows) == [
        "default / told speedup, m at 0.90 unstructured: 0.50 (BELOW 0.9)",
        "default / told speedup, m at 0.90 block:4x1: 1.00 (meets 0.9)",
    ]


def test_cli_merges_end_to_end_runs_of_several_processes(tmp_path, capsys):
    """--processes N --merge re-reads what N children wrote; each figure is their median."""
    import json

    from sparsegemm.bench.cli import main

    base = {"model": "tiny mlp", "input_shape": "4x16", "sparsity": 0.9,
            "pattern": "unstructured", "format": "default", "floor": None, "status": "ok",
            "detail": "", "dense_time_s": 1e-3, "max_rel_error": 1e-7, "steady": True}
    for index, speedup in enumerate((2.0, 3.0, 7.0), 1):
        folder = tmp_path / f"process-{index}"
        folder.mkdir()
        row = {**base, "speedup": speedup, "sparse_time_s": 1e-3 / speedup}
        document = {"schema": "sparsegemm-bench/1", "metadata": {"date": f"d{index}"},
                    "results": [row],
                    "notes": ["a child's note"]}
        (folder / "e2e.json").write_text(json.dumps(document))
    argv = ["bench", "--e2e-only", "--processes", "3", "--merge", "--out", str(tmp_path),
            "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 processes, spread 3.50x" in printed and "a child's note" in printed
    merged = json.loads((tmp_path / "e2e.json").read_text())
    (row,) = merged["results"]
    assert row["speedup"] == 3.0 and row["process_speedups"] == [2.0, 3.0, 7.0]
    assert [p["date"] for p in merged["metadata"]["processes"]] == ["d1", "d2", "d3"]
    (tmp_path / "process-3" / "e2e.json").unlink()
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert error.value.code == 2 and "process-3" in capsys.readouterr().err


def test_cold_copy_count_holds_twice_the_cache_within_bounds():
    assert e2e.cold_copy_count(10 << 20, 32 << 20) == 7  # ceil(64 / 10)
    assert e2e.cold_copy_count(100 << 20, 32 << 20) == 2  # past it, but never one copy
    assert e2e.cold_copy_count(1, 32 << 20) == e2e.MAX_COLD_MODEL_COPIES
    assert e2e.cold_copy_count(0, 32 << 20) == e2e.MAX_COLD_MODEL_COPIES


def test_cold_copies_stay_within_a_share_of_free_memory():
    share = e2e.COLD_MEMORY_SHARE
    assert e2e.cold_copies_that_fit(20, 100, None) == 20  # no limit known
    assert e2e.cold_copies_that_fit(20, 100, int(100 * 5 / share)) == 5
    assert e2e.cold_copies_that_fit(3, 100, int(100 * 5 / share)) == 3
    assert e2e.cold_copies_that_fit(20, 10**12, 10**9) == 1  # never fewer than one
    free = e2e.free_memory_bytes()
    assert free is None or free > 0


def test_rotating_call_runs_each_model_in_turn():
    seen = []
    models = [lambda x, i=i: seen.append((i, x)) for i in range(3)]
    call = e2e.rotating_call(models, "x")
    for _ in range(7):
        call()
    assert seen == [(i % 3, "x") for i in range(7)]


@pytest.mark.torch
def test_model_bytes_of_a_forward_counts_only_the_modules_it_calls():
    torch = pytest.importorskip("torch")

    class SkipsOne(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used = torch.nn.Linear(16, 8)
            self.unused = torch.nn.Linear(16, 1000)
            self.register_buffer("table", torch.zeros(10))

        def forward(self, x):
            return self.used(x)

    model = SkipsOne()
    used = (16 * 8 + 8 + 10) * 4  # the called Linear, and the buffer of the called root
    assert e2e.model_bytes(model, torch.randn(2, 16)) == used
    assert e2e.model_bytes(model) == used + (16 * 1000 + 1000) * 4
    # a tensor shared by two modules counts once
    model.unused.weight = model.used.weight
    assert e2e.model_bytes(model) == used + 1000 * 4


@pytest.mark.torch
def test_cold_run_rotates_every_contender_through_copies_past_the_cache():
    pytest.importorskip("torch")
    tiny_cache = 64 << 10  # 64 KiB: the tiny MLP's copies must hold 128 KiB
    rows, notes = e2e.run_e2e((0.9,), Pattern(), 1, FAST, models=TINY, formats=("csr",),
                              cold=True, llc_bytes=tiny_cache)
    assert notes == []
    (row,) = rows
    assert row["status"] == "ok" and row["cache"] == "cold"
    dense_bytes = (16 * 32 + 32 + 32 * 8 + 8) * 4
    assert row["dense_cold_copies"] == e2e.cold_copy_count(dense_bytes, tiny_cache) > 1
    assert row["cold_copies"] > row["dense_cold_copies"]  # the sparse model is smaller
    assert row["speedup"] > 0 and "cold:" in e2e.e2e_table(rows)
    warm, _ = e2e.run_e2e((0.9,), Pattern(), 1, FAST, models=TINY, formats=("csr",))
    assert warm[0]["cache"] == "warm" and warm[0].get("cold_copies", 1) == 1


@pytest.mark.torch
def test_cold_run_makes_fewer_copies_where_memory_is_short(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setattr(e2e, "free_memory_bytes", lambda: 1 << 10)  # 1 KiB free
    rows, _ = e2e.run_e2e((0.9,), Pattern(), 1, FAST, models=TINY, formats=("csr",),
                          cold=True, llc_bytes=64 << 10)
    (row,) = rows
    assert row["status"] == "ok"
    assert row["dense_cold_copies"] == 1 and row["cold_copies"] == 1


@pytest.mark.torch
def test_breakdown_counts_attention_apart_from_its_projections():
    torch = pytest.importorskip("torch")
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    x = torch.randn(2, 50, 32)
    with torch.no_grad():
        shares = e2e.layer_time_breakdown(layer, x, calls=2)
    assert set(shares) == {"sparse_layers_s", "dense_layers_s", "attention_s", "other_s"}
    assert shares["attention_s"] > 0 and shares["dense_layers_s"] > 0
    text = e2e._breakdown_text(shares)
    assert text.startswith("sparse  0% dense") and " attn " in text
    # Rows from before the attention bucket still print.
    del shares["attention_s"]
    assert " attn  0% " in e2e._breakdown_text(shares)


@pytest.mark.torch
def test_breakdown_counts_attention_written_out_and_fused():
    torch = pytest.importorskip("torch")
    from sparsegemm.torch import sparsify

    model, x = e2e.MODELS_BY_KEY["hfbert"].build()
    e2e.prune_model(model, 0.9, Pattern())
    sparsify(model.eval(), format="csr", min_sparsity=0.0)
    with torch.no_grad():
        shares = e2e.layer_time_breakdown(model, x, calls=1)
    assert shares["attention_s"] > 0 and shares["sparse_layers_s"] > 0


@pytest.mark.torch
def test_breakdown_counts_one_call_self_attention_projections_as_sparse_layers(monkeypatch):
    torch = pytest.importorskip("torch")
    from sparsegemm.torch import attention, sparsify

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    e2e.prune_model(layer, 0.9, Pattern())
    sparsify(layer, format="csr", min_sparsity=0.0)
    x = torch.randn(1, 40, 32)
    one_calls = []
    real = attention._core.csr_self_attention
    monkeypatch.setattr(attention._core, "csr_self_attention",
                        lambda *args: one_calls.append(1) or real(*args))
    with torch.no_grad():
        shares = e2e.layer_time_breakdown(layer, x, calls=2)
        assert one_calls == []  # the pass ran the projections as layers
        in_proj = shares["sparse_layers_s"]
        layer(x)
    assert one_calls == [1] and "one_call" not in vars(layer.self_attn)
    assert in_proj > 0 and shares["attention_s"] > 0


@pytest.mark.torch
def test_the_int8_format_converts_with_int8_weights_and_counts_them_as_sparse_layers():
    pytest.importorskip("torch")
    from sparsegemm.torch import SparseLinearInt8

    assert e2e.sparsify_options("int8", Pattern(), 64) == {"weight_dtype": "int8"}
    rows, _ = e2e.run_e2e((0.9,), Pattern(), 1, FAST, models=TINY, formats=("int8",))
    (row,) = rows
    assert row["status"] == "ok" and row["floor"] is None
    # int8 is checked to the int8 tolerance, not float32's
    assert 1e-5 < row["max_rel_error"] <= e2e.INT8_MODEL_TOLERANCE
    assert row["sparse_layers_s"] > 0 and row["dense_layers_s"] == 0
    assert "int8-bitmap" in row["report"] and SparseLinearInt8.format == "int8-bitmap"
