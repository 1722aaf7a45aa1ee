"""Int8 bitmap weights against torch's dynamic int8 and fp32 dense nn.Linear, cold.

For each shape (out x in), sparsity and batch it prunes a random normal
weight (uniformly at random), checks every contender against the fp32
product, then times them interleaved (median of rounds, see
sparsegemm.planner._time_candidates) with the weights out of cache: each
contender rotates through enough separately built copies of its operand to
exceed twice the last-level cache, so every call streams its weight from
memory. Contenders: sparsegemm.Int8BitmapMatrix (x quantized per row, int32
accumulation), torch ``quantize_dynamic`` int8 (FBGEMM, dense), torchao's
``Int8DynamicActivationInt8WeightConfig`` where torchao is installed (dense),
and fp32 dense (the faster of torch F.linear and numpy ``x @ W.T``). "vs int8"
is against the faster of the two int8 dense contenders. Run on a quiet
machine (``uptime`` load < 0.5); numbers from a busy one are not evidence.

    OMP_WAIT_POLICY=passive PYTHONPATH=python python benchmarks/int8_bitmap_floors.py \\
        --threads 2 --batches 1 16 --sparsities 0.5 0.7 0.9

Target floors at batch 1, 2 threads: vs int8 dense >= 1.4x at 50%,
>= 2x at 70%, >= 4x at 90%; vs fp32 dense >= 12x at 90%.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import sparsegemm
from sparsegemm import planner
from sparsegemm.bench.environment import last_level_cache_bytes

SHAPES = [(4096, 11008), (11008, 4096)]


def cold_operands(build, nbytes_of, llc: int) -> list:
    """Separately built operands that together exceed twice the last-level cache."""
    first = build()
    return [first] + [build() for _ in range(planner.cold_copies(nbytes_of(first), llc) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", default=[f"{m}x{k}" for m, k in SHAPES],
                        help="out x in, e.g. 4096x11008")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import importlib.util

    import torch.nn.functional as F
    from threadpoolctl import threadpool_limits

    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    sparsegemm.show_config()
    llc, llc_source = last_level_cache_bytes()
    print(f"last-level cache {llc / 2**20:.0f} MiB ({llc_source}): each operand rotates through "
          f"copies exceeding {2 * llc / 2**20:.0f} MiB")
    print(f"{'shape':>11} {'batch':>5} {'sparsity':>8} {'int8 bitmap ms':>14} {'B/weight':>8} "
          f"{'vs int8':>8} {'vs fp32':>8} {'rel err':>8}  int8 dense ms (qint8, torchao), "
          f"fp32 ms (torch, numpy)")
    rng = np.random.default_rng(0)
    threads = args.threads

    def quantized_module(W: np.ndarray) -> nn.Module:
        linear = nn.Linear(W.shape[1], W.shape[0], bias=False)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W))
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear},
                                                      dtype=torch.qint8)

    with_torchao = importlib.util.find_spec("torchao") is not None
    if not with_torchao:
        print("torchao is not installed: int8 dense is quantize_dynamic only")

    def torchao_module(W: np.ndarray) -> nn.Module:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        linear = nn.Linear(W.shape[1], W.shape[0], bias=False)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W))
        model = nn.Sequential(linear)
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return model

    for shape in args.shapes:
        rows, cols = (int(v) for v in shape.split("x"))
        base = rng.standard_normal((rows, cols), dtype=np.float32)
        for sparsity in args.sparsities:
            W = np.where(rng.random((rows, cols), dtype=np.float32) < sparsity, 0, base)
            W = W.astype(np.float32)
            dense = cold_operands(W.copy, lambda w: w.nbytes, llc)
            torch_dense = [torch.from_numpy(w) for w in dense]
            # FBGEMM's packed int8 weight: one byte per weight.
            qint8 = cold_operands(lambda W=W: quantized_module(W), lambda _, size=W.size: size, llc)
            torchao = (cold_operands(lambda W=W: torchao_module(W), lambda _, size=W.size: size,
                                     llc) if with_torchao else [])
            int8 = cold_operands(lambda W=W: sparsegemm.Int8BitmapMatrix.from_dense(W),
                                 lambda a: a.storage_bytes, llc)
            for batch in args.batches:
                x = rng.standard_normal((batch, cols), dtype=np.float32)
                xt = torch.from_numpy(x)
                runners = {
                    planner.DENSE_TORCH: planner._rotating(
                        torch_dense, lambda w, xt=xt: F.linear(xt, w)),
                    planner.DENSE_NUMPY: planner._rotating(dense, lambda w, x=x: x @ w.T),
                    "qint8": planner._rotating(qint8, lambda m, xt=xt: m(xt)),
                    **({"torchao": planner._rotating(torchao, lambda m, xt=xt: m(xt))}
                       if torchao else {}),
                    "int8_bitmap": planner._rotating(
                        int8, lambda a, x=x: sparsegemm.linear(x, a, num_threads=threads)),
                }
                expected = x.astype(np.float64) @ W.T.astype(np.float64)
                errors = {}
                for name, run in runners.items():
                    result = run()
                    result = result.numpy() if isinstance(result, torch.Tensor) else result
                    errors[name] = np.linalg.norm(result - expected) / np.linalg.norm(expected)
                    assert errors[name] < 0.03, (name, errors[name])
                # Every copy once more before the timing: the int8 matrices build their
                # batch-1 and small-batch plans on first use, as a model's first call does.
                for run in runners.values():
                    for _ in range(max(len(dense), len(qint8), len(torchao), len(int8))):
                        run()
                with threadpool_limits(limits=threads, user_api="blas"), torch.no_grad():
                    times = planner._time_candidates(runners, args.repeats, args.rounds)
                fp32 = min(times[planner.DENSE_TORCH], times[planner.DENSE_NUMPY])
                int8_dense = min(times["qint8"], times.get("torchao", float("inf")))
                torchao_ms = f"{times['torchao'] * 1e3:.3f}" if "torchao" in times else "-"
                ours = times["int8_bitmap"]
                print(f"{shape:>11} {batch:>5} {sparsity:>8.2f} {ours * 1e3:>14.3f} "
                      f"{int8[0].bytes_per_weight:>8.3f} {int8_dense / ours:>7.2f}x "
                      f"{fp32 / ours:>7.2f}x {errors['int8_bitmap']:>8.4f}  "
                      f"({times['qint8'] * 1e3:.3f}, {torchao_ms}), {fp32 * 1e3:.3f} "
                      f"({times[planner.DENSE_TORCH] * 1e3:.3f}, "
                      f"{times[planner.DENSE_NUMPY] * 1e3:.3f})", flush=True)
            del dense, torch_dense, qint8, torchao, int8


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
