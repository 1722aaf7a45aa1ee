"""What running a feed-forward block as one kernel buys: ``sparsegemm.feed_forward``
against two ``sparsegemm.linear`` calls on single blocks, then whole models through
``sparsify(model)`` (linked, the default) against ``sparsify(model,
fuse_feed_forward=False)``, both against the dense model. Interleaved rounds in one
process, medians; outputs are checked first.

Blocks: all-MiniLM-L6-v2's (384-1536-384 at 1,024 rows: 8 sentences of 128 tokens)
and BERT-base's (768-3072-768 at 128 and 512 rows), magnitude-pruned. Models: the
Hugging Face-style BERT-base layer of ``--e2e`` (seq 128) and, where installed, the
real MiniLM encoder (see shared_input.py).

    PYTHONPATH=python python benchmarks/feed_forward.py --threads 2
"""

from __future__ import annotations

import sys

import numpy as np

import sparsegemm
from shared_input import (
    benchmark_models,
    feature_benchmark_parser,
    interleaved_medians,
    print_variant_table,
)

BLOCKS = [("MiniLM", 384, 1536, 1024), ("BERT-base", 768, 3072, 128),
          ("BERT-base", 768, 3072, 512)]


def compare_block(name: str, width: int, hidden: int, rows: int, sparsity: float,
                  rounds: int, calls: int, threads: int) -> str:
    rng = np.random.default_rng(0)
    first = sparsegemm.CSRMatrix.from_dense(
        sparsegemm.magnitude_prune(rng.standard_normal((hidden, width), np.float32), sparsity))
    second = sparsegemm.CSRMatrix.from_dense(
        sparsegemm.magnitude_prune(rng.standard_normal((width, hidden), np.float32), sparsity))
    bias = rng.standard_normal(hidden).astype(np.float32)
    x = rng.standard_normal((rows, width)).astype(np.float32)

    def two_calls():
        hidden_out = sparsegemm.linear(x, first, bias, activation="gelu", num_threads=threads)
        return sparsegemm.linear(hidden_out, second, num_threads=threads)

    def one_call():
        return sparsegemm.feed_forward(x, first, second, bias, activation="gelu",
                                       num_threads=threads)

    np.testing.assert_allclose(one_call(), two_calls(), rtol=1e-4, atol=1e-3)
    ms = interleaved_medians({"two": two_calls, "one": one_call}, rounds, calls)
    two, one = ms["two"], ms["one"]
    return (f"{name:10} {f'{width}-{hidden}-{width}':>14} {rows:5} {sparsity:8.0%} "
            f"{two:9.3f} {one:9.3f} {two / one:7.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = feature_benchmark_parser(__doc__.split("\n\n")[0], sparsity="0.9,0.7,0.5",
                                      parts="blocks")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    sparsities = [float(s) for s in args.sparsity.split(",")]
    print(f"sparsegemm {sparsegemm.__version__}, ISA {sparsegemm.get_isa()}, {args.threads} "
          f"threads, medians of {args.rounds} interleaved rounds of {args.calls} calls")
    print(f"{'block':10} {'shape':>14} {'rows':>5} {'sparsity':>8} {'two ms':>9} {'one ms':>9} "
          f"{'gain':>8}")
    for sparsity in sparsities:
        for block in BLOCKS:
            print(compare_block(*block, sparsity, args.rounds, args.calls, args.threads),
                  flush=True)
    if args.no_models:
        return
    print_variant_table(benchmark_models(), sparsities, args.rounds, args.calls,
                        ("apart", {"fuse_feed_forward": False}), ("linked", {}))


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
