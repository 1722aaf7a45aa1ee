"""What the residual-norm kernel buys: ``sparsegemm.torch.add_layer_norm(y, residual,
norm)`` against torch's ``norm(y + residual)`` on post-norm encoder shapes, then whole
models through ``sparsify(model)`` (norms fused, the default) against
``sparsify(model, fuse_layer_norm=False)``, both against the dense model. Interleaved
rounds in one process, medians; outputs are checked first.

Shapes (rows, width): all-MiniLM-L6-v2 at 8 x 128 tokens (1024 x 384), BERT-base at
1 x 128 and 4 x 128 tokens (128 x 768, 512 x 768), one token (1 x 768). Models: the
HF-style BERT-base layer of the e2e suite (seq 128) and the real MiniLM encoder where
installed (see shared_input.py).

    PYTHONPATH=python python benchmarks/layer_norm.py --threads 2
"""

from __future__ import annotations

import sys

import sparsegemm
import torch
from shared_input import (
    benchmark_models,
    feature_benchmark_parser,
    interleaved_medians,
    print_variant_table,
)
from sparsegemm.torch import add_layer_norm
from torch import nn

SHAPES = [("MiniLM", 1024, 384), ("BERT-base", 128, 768), ("BERT-base", 512, 768),
          ("one token", 1, 768)]


def compare_shape(name: str, rows: int, width: int, rounds: int, calls: int) -> str:
    generator = torch.Generator().manual_seed(0)
    y, residual = (torch.randn(rows, width, generator=generator) for _ in range(2))
    norm = nn.LayerNorm(width)
    with torch.no_grad():
        norm.weight.normal_(generator=generator)
        norm.bias.normal_(generator=generator)
    with torch.inference_mode():
        torch.testing.assert_close(add_layer_norm(y, residual, norm), norm(y + residual),
                                   rtol=1e-5, atol=1e-5)
        ms = interleaved_medians({"torch": lambda: norm(y + residual),
                                  "kernel": lambda: add_layer_norm(y, residual, norm)},
                                 rounds, calls)
    torch_ms, kernel_ms = ms["torch"], ms["kernel"]
    return (f"{name:10} {f'{rows}x{width}':>10} {torch_ms * 1e3:9.1f} {kernel_ms * 1e3:9.1f} "
            f"{torch_ms / kernel_ms:7.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = feature_benchmark_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--shape-calls", type=int, default=200,
                        help="calls per timed block of one add + norm (microseconds each)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"sparsegemm {sparsegemm.__version__}, ISA {sparsegemm.get_isa()}, torch "
          f"{torch.__version__}, {args.threads} threads, medians of {args.rounds} interleaved "
          f"rounds")
    print(f"{'shape':10} {'rows x d':>10} {'torch us':>9} {'ours us':>9} {'gain':>8}")
    for shape in SHAPES:
        print(compare_shape(*shape, args.rounds, args.shape_calls), flush=True)
    if args.no_models:
        return
    sparsities = [float(s) for s in args.sparsity.split(",")]
    print_variant_table(benchmark_models(), sparsities, args.rounds, args.calls,
                        ("unfused", {"fuse_layer_norm": False}), ("fused", {}))


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
