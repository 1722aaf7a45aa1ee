"""bfloat16-valued sparse weights (bitmap, CSR, BSR) against dense bfloat16 and float32, cold.

For each shape, sparsity and batch it prunes a random weight (uniformly at
random), rounds it to bfloat16, checks every contender against a float64
product of the same rounded weight, then times them interleaved (median of
rounds, sparsegemm.planner._time_candidates) with the weights out of cache:
each contender rotates through enough copies of its operand to exceed twice
the last-level cache (planner.cold_copies), as benchmarks/bitmap_floors.py does.

Contenders, for each format F of ``--formats`` (bitmap, csr, bsr: 4x1 blocks):

* ``F_bf16``: ``sparsegemm.linear(x, <F matrix>(..., dtype="bfloat16"))``,
  float32 x and y (the kernel alone);
* ``F_fp32``: the same format with float32 values (what bfloat16 storage saves);
* ``F_module``: the same weight in ``SparseLinear(format=F)`` of a
  bfloat16 module, bfloat16 x and y (the kernel plus the op's conversions);
* ``dense_bf16``: torch ``F.linear`` with bfloat16 weight and x;
* ``dense_fp32``: the faster of torch ``F.linear`` and numpy ``x @ W.T`` in float32.

Ratios are time(dense) / time(ours). Run on a quiet machine (``uptime`` load
< 0.5); numbers from a busy one are not evidence.

    OMP_WAIT_POLICY=passive KMP_BLOCKTIME=1 PYTHONPATH=python \\
        python benchmarks/bf16_bitmap_floors.py --threads 2 --batches 1 16

Target floors (2 threads, batch 1): bitmap_bf16 vs dense_bf16 >= 1.5x at 50%
sparsity and >= 5x at 90%.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import sparsegemm
from sparsegemm import planner

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096)]
FORMATS = ("bitmap", "csr", "bsr")
BSR_BLOCK = (4, 1)


def sparse_matrix(fmt: str, weight: np.ndarray, dtype) -> object:
    """``weight`` in format ``fmt`` with ``dtype`` values (float32 or 'bfloat16')."""
    if fmt == "bitmap":
        return sparsegemm.BitmapMatrix.from_dense(weight, dtype=dtype)
    if fmt == "csr":
        return sparsegemm.CSRMatrix.from_dense(weight, dtype=dtype)
    return sparsegemm.BSRMatrix.from_dense(weight, BSR_BLOCK, dtype=dtype)


def cold(build, nbytes: int) -> list:
    """``build()`` called often enough that the copies exceed twice the last-level cache."""
    return [build() for _ in range(planner.cold_copies(nbytes))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", default=[f"{m}x{k}" for m, k in SHAPES],
                        help="out x in, e.g. 4096x11008")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.9])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    args = parser.parse_args()

    import torch.nn.functional as F
    from threadpoolctl import threadpool_limits

    import torch
    from sparsegemm.torch import SparseLinear

    torch.set_num_threads(args.threads)
    sparsegemm.show_config()
    threads = args.threads
    print(f"{'shape':>11} {'batch':>5} {'sparsity':>8} {'format':>6} {'bf16 ms':>8} "
          f"{'vs bf16':>8} {'vs fp32':>8} {'vs own fp32':>11} {'module vs bf16':>14}  "
          f"ms (dense bf16, dense fp32 torch, numpy; format fp32, module)")
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        rows, cols = (int(v) for v in shape.split("x"))
        base = rng.standard_normal((rows, cols), dtype=np.float32)
        for sparsity in args.sparsities:
            pruned = np.where(rng.random((rows, cols), dtype=np.float32) < sparsity, 0, base)
            weight_bf16 = torch.from_numpy(pruned).to(torch.bfloat16)
            W = weight_bf16.float().numpy()  # the rounded weight, in float32
            operands: dict[str, list] = {}
            for fmt in args.formats:
                for dtype in ("bfloat16", np.float32):
                    name = f"{fmt}_{'bf16' if dtype == 'bfloat16' else 'fp32'}"
                    first = sparse_matrix(fmt, W, dtype)
                    operands[name] = [first] + cold(
                        lambda fmt=fmt, dtype=dtype, W=W: sparse_matrix(fmt, W, dtype),
                        first.nbytes)[1:]

                def module(weight=weight_bf16, fmt=fmt):
                    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False,
                                             dtype=torch.bfloat16)
                    with torch.no_grad():
                        linear.weight.copy_(weight)
                    return SparseLinear.from_dense(linear, format=fmt)

                operands[f"{fmt}_module"] = cold(module, operands[f"{fmt}_bf16"][0].nbytes)
            dense_bf16 = cold(weight_bf16.clone, weight_bf16.numel() * 2)
            dense_fp32 = cold(W.copy, W.nbytes)
            torch_fp32 = [torch.from_numpy(w) for w in dense_fp32]
            for batch in args.batches:
                x = rng.standard_normal((batch, cols), dtype=np.float32)
                x_bf16 = torch.from_numpy(x).to(torch.bfloat16)
                x_rounded = x_bf16.float().numpy()  # every contender sees the same x
                xt = torch.from_numpy(x_rounded)
                runners = {
                    "dense_bf16": planner._rotating(dense_bf16,
                                                    lambda w, x=x_bf16: F.linear(x, w)),
                    "dense_torch": planner._rotating(torch_fp32, lambda w, x=xt: F.linear(x, w)),
                    "dense_numpy": planner._rotating(dense_fp32, lambda w, x=x_rounded: x @ w.T),
                }
                for name, copies in operands.items():
                    if name.endswith("_module"):
                        runners[name] = planner._rotating(copies, lambda m, x=x_bf16: m(x))
                    else:
                        runners[name] = planner._rotating(
                            copies, lambda a, x=x_rounded: sparsegemm.linear(
                                x, a, num_threads=threads))
                expected = x_rounded.astype(np.float64) @ W.T.astype(np.float64)
                scale = np.abs(expected).max()
                with torch.inference_mode():
                    for name, run in runners.items():
                        result = run()
                        result = result.float().numpy() if torch.is_tensor(result) else result
                        # bfloat16 outputs are rounded to 8 significant bits.
                        np.testing.assert_allclose(result, expected, rtol=1e-2,
                                                   atol=1e-2 * scale, err_msg=name)
                    # Every copy once more before the timing: very sparse bitmaps build
                    # their column plan on first use, as a model's first call does.
                    most = max(len(c) for c in [*operands.values(), dense_bf16, dense_fp32])
                    for run in runners.values():
                        for _ in range(most):
                            run()
                    with threadpool_limits(limits=threads, user_api="blas"):
                        times = planner._time_candidates(runners, args.repeats, args.rounds)
                dense = times["dense_bf16"]
                fp32 = min(times["dense_torch"], times["dense_numpy"])
                for fmt in args.formats:
                    ours, own_fp32 = times[f"{fmt}_bf16"], times[f"{fmt}_fp32"]
                    module_time = times[f"{fmt}_module"]
                    print(f"{shape:>11} {batch:>5} {sparsity:>8.2f} {fmt:>6} {ours * 1e3:>8.3f} "
                          f"{dense / ours:>7.2f}x {fp32 / ours:>7.2f}x {own_fp32 / ours:>10.2f}x "
                          f"{dense / module_time:>13.2f}x  ({dense * 1e3:.3f}, "
                          f"{times['dense_torch'] * 1e3:.3f}, {times['dense_numpy'] * 1e3:.3f}; "
                          f"{own_fp32 * 1e3:.3f}, {module_time * 1e3:.3f})", flush=True)
            del operands, dense_bf16, dense_fp32, torch_fp32


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
