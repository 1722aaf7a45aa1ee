"""What the attention kernel buys: ``sparsegemm.torch.scaled_dot_product_attention``
against torch's ``F.scaled_dot_product_attention`` on encoder shapes, then whole
models through ``sparsify(model)`` (kernel attention, the default) against
``sparsify(model, kernel_attention=False)`` (torch's SDPA), both against the dense
model. Interleaved rounds in one process, medians; outputs are checked first.

Shapes (batch, heads, tokens, head size): all-MiniLM-L6-v2 at 8 x 128 tokens and
32 x 32, BERT-base at 1 x 128 and 1 x 512. Models: the real MiniLM encoder where
installed (see shared_input.py) and ``nn.TransformerEncoderLayer(768, 12, 3072)``
at seq 128 (its attention becomes a SparseMultiheadAttention).

    PYTHONPATH=python python benchmarks/attention.py --threads 2
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch.nn.functional as F

import sparsegemm
import torch
from shared_input import (
    benchmark_models,
    e2e_model,
    feature_benchmark_parser,
    interleaved_medians,
    print_variant_table,
)
from sparsegemm.bench.e2e import _bert_layer
from sparsegemm.torch import scaled_dot_product_attention

SHAPES = [("MiniLM", 8, 12, 128, 32), ("MiniLM", 32, 12, 32, 32), ("BERT-base", 1, 12, 128, 64),
          ("BERT-base", 1, 12, 512, 64)]


def compare_shape(name: str, batch: int, heads: int, tokens: int, dims: int, rounds: int,
                  calls: int) -> str:
    generator = torch.Generator().manual_seed(0)
    # (batch, heads, tokens, dims) views of projection outputs, as models hand them over
    q, k, v = (torch.randn(batch, tokens, heads, dims, generator=generator).transpose(1, 2)
               for _ in range(3))
    with torch.inference_mode():
        torch.testing.assert_close(scaled_dot_product_attention(q, k, v),
                                   F.scaled_dot_product_attention(q, k, v), rtol=1e-4, atol=1e-5)
        ms = interleaved_medians({"torch": lambda: F.scaled_dot_product_attention(q, k, v),
                                  "kernel": lambda: scaled_dot_product_attention(q, k, v)},
                                 rounds, calls)
    torch_ms, kernel_ms = ms["torch"], ms["kernel"]
    return (f"{name:10} {f'{batch}x{heads}x{tokens}x{dims}':>14} {torch_ms:9.3f} "
            f"{kernel_ms:9.3f} {torch_ms / kernel_ms:7.2f}x")


def encoder_layer() -> tuple[Any, Callable]:
    return e2e_model(_bert_layer)


def main(argv: list[str] | None = None) -> None:
    parser = feature_benchmark_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"sparsegemm {sparsegemm.__version__}, ISA {sparsegemm.get_isa()}, torch "
          f"{torch.__version__}, {args.threads} threads, medians of {args.rounds} interleaved "
          f"rounds of {args.calls} calls")
    print(f"{'shape':10} {'BxHxSxD':>14} {'torch ms':>9} {'ours ms':>9} {'gain':>8}")
    for shape in SHAPES:
        print(compare_shape(*shape, args.rounds, args.calls), flush=True)
    if args.no_models:
        return
    models = benchmark_models(("encoder", encoder_layer))
    print_variant_table(models, [float(s) for s in args.sparsity.split(",")], args.rounds,
                        args.calls, ("sdpa", {"kernel_attention": False}), ("kernel", {}))


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
