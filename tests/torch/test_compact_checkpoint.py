"""Compact safetensors checkpoints of sparse models: round trips, file size, peak memory."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import torch
from sparsegemm import prune
from sparsegemm.torch import SparseConv2d, SparseLinear, sparsify
from sparsegemm.torch.compact import load_sparse, save_sparse
from torch import nn

pytest.importorskip("safetensors")


def _model():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 300), nn.ReLU(), nn.Linear(300, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def test_round_trip_into_a_meta_model_gives_the_same_outputs(tmp_path):
    model = _model()
    prune.prune_model(model, 0.9, scope="layer", skip_first_last=False)
    prune.remove(model)
    prune.prune_module(model[7], 0.5)  # stays a masked dense layer
    sparsify(model, format="csr", filter_fn=lambda module, name: name in ("0", "3"))
    model[5] = SparseLinear.from_dense(model[5], format="bsr", blocksize=(4, 1))
    x = torch.randn(2, 3, 6, 6)
    expected = model(x)
    save_sparse(model, tmp_path / "model.safetensors")

    with torch.device("meta"):
        fresh = _model()
    load_sparse(fresh, tmp_path / "model.safetensors")
    assert isinstance(fresh[0], SparseConv2d) and isinstance(fresh[3], SparseLinear)
    assert fresh[5].blocksize == (4, 1) and fresh[5].indices.dtype == torch.int32
    assert torch.equal(fresh[7].weight_mask, model[7].weight_mask)
    for name, tensor in fresh.state_dict().items():
        assert tensor.device.type == "cpu", name
        assert torch.equal(tensor, model.state_dict()[name]), name
    torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)
    assert fresh[3].values.requires_grad


def test_ninety_percent_layers_take_at_most_a_fifth_of_their_dense_bytes(tmp_path):
    layer = nn.Linear(1024, 512)
    prune.prune_module(layer, 0.9)
    model = sparsify(nn.Sequential(layer), format="csr")
    sizes = save_sparse(model, tmp_path / "model.safetensors")
    dense_bytes = 1024 * 512 * 4
    assert sizes["sparse_dense_bytes"] == dense_bytes
    assert sizes["sparse_bytes"] <= 0.2 * dense_bytes
    header_and_bias = 4096 + 512 * 4
    assert sizes["file_bytes"] <= 0.2 * dense_bytes + header_and_bias
    assert (tmp_path / "model.safetensors").stat().st_size == sizes["file_bytes"]


def test_loading_a_foreign_file_fails_clearly(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a sparsegemm checkpoint"):
        load_sparse(nn.Linear(2, 2), tmp_path / "plain.safetensors")


def _regular_sparse_linear(size: int, keep_every: int) -> SparseLinear:
    """A size x size SparseLinear keeping every ``keep_every``-th column, built without a dense
    weight."""
    per_row = size // keep_every
    layer = SparseLinear(size, size, nnz=size * per_row)
    rows = torch.arange(size).reshape(-1, 1)
    columns = torch.arange(per_row).reshape(1, -1) * keep_every + rows % keep_every
    with torch.no_grad():
        layer.indices.copy_(columns.reshape(-1).to(torch.int32))
        layer.indptr.copy_(torch.arange(size + 1) * per_row)
        layer.values.normal_()
    layer.check_pattern()
    return layer


_LOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    import psutil, torch
    from torch import nn
    from sparsegemm.torch.compact import load_sparse


    def peak_rss():  # VmHWM: the high-water mark of the resident set, in bytes
        with open("/proc/self/status") as status:
            line = next(l for l in status if l.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024


    size, depth = int(sys.argv[2]), int(sys.argv[3])
    with torch.device("meta"):
        model = nn.Sequential(*(nn.Linear(size, size) for _ in range(depth)))
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the high-water mark (inherited from the parent otherwise)
    baseline = psutil.Process().memory_info().rss
    peak_before = peak_rss()
    load_sparse(model, sys.argv[1])
    print(json.dumps({"baseline": baseline, "peak_before": peak_before, "peak": peak_rss()}))
""")



@pytest.mark.slow  # a subprocess that imports torch
def test_peak_memory_of_a_load_is_about_the_file_size(tmp_path):
    size, depth = 2048, 24
    model = nn.Sequential(*(_regular_sparse_linear(size, 8) for _ in range(depth)))
    path = tmp_path / "big.safetensors"
    file_bytes = save_sparse(model, path)["file_bytes"]
    assert file_bytes < 0.2 * depth * size * size * 4
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset the peak resident set size")
    script = tmp_path / "load.py"
    script.write_text(_LOAD_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, str(script), str(path), str(size), str(depth)],
                            capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(root / "python"), "PATH": ""})
    memory = json.loads(result.stdout.strip().splitlines()[-1])
    # In memory the indices are int32 (int16 in the file): 4/3 of the file is the floor.
    assert memory["peak"] <= memory["baseline"] + 1.5 * file_bytes, (memory, file_bytes)
