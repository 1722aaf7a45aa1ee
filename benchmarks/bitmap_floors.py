"""The bitmap format against dense nn.Linear on unstructured weights, cold: the floors' numbers.

For each shape, sparsity and batch it prunes a random weight (uniformly at
random), checks every contender against the dense result, then times them
interleaved (median of rounds, see sparsegemm.planner._time_candidates) with
the weights out of cache: each contender rotates through enough separately
built copies of its operand to exceed twice the last-level cache (as the
planner does at batch <= 16), so every call streams its weight from memory.
Contenders: torch F.linear and numpy ``x @ W.T`` (dense), sparsegemm.linear
with the BitmapMatrix and with CSR. Ratios are over the faster dense
contender; GB/s are the operand bytes streamed per second (for rows walked by
their stored columns, the values and the window plan, not the bits). Every copy
runs once before the timing, so plans built on first use are not timed. Run on a quiet
machine (``uptime`` load < 0.5); numbers from a busy one are not evidence.

    OMP_WAIT_POLICY=passive KMP_BLOCKTIME=1 PYTHONPATH=python \\
        python benchmarks/bitmap_floors.py --threads 2 --batches 1 8 \\
        --sparsities 0 0.25 0.5 0.7

Floors (fp32, 2 threads, AVX-512 Zen 4): batch 1 >= 1.5x at 50%, >= 2.2x at 70%,
break-even at <= 25%; batch 8 >= 1.3x at 50%; at 0% never below 0.85x.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import sparsegemm
from sparsegemm import planner

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", default=[f"{m}x{k}" for m, k in SHAPES],
                        help="out x in, e.g. 4096x11008")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.7])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-csr", action="store_true", help="skip the CSR contender")
    args = parser.parse_args()

    import torch.nn.functional as F
    from threadpoolctl import threadpool_info, threadpool_limits

    import torch

    torch.set_num_threads(args.threads)
    sparsegemm.show_config()
    print("threadpools:", [(i["internal_api"], i.get("version"), i["num_threads"])
                           for i in threadpool_info()])
    llc = planner.last_level_cache_bytes()[0]
    print(f"last-level cache {llc / 2**20:.0f} MiB: each operand rotates through copies "
          f"exceeding {2 * llc / 2**20:.0f} MiB")
    print(f"{'shape':>11} {'batch':>5} {'sparsity':>8} {'bitmap ms':>10} {'vs dense':>9} "
          f"{'GB/s':>6} {'dense GB/s':>10} {'csr vs dense':>12}  dense ms (torch, numpy)")
    rng = np.random.default_rng(0)
    threads = args.threads
    for shape in args.shapes:
        rows, cols = (int(v) for v in shape.split("x"))
        base = rng.standard_normal((rows, cols), dtype=np.float32)
        for sparsity in args.sparsities:
            W = np.where(rng.random((rows, cols), dtype=np.float32) < sparsity, 0, base)
            W = W.astype(np.float32)
            dense_copies = [W] + [W.copy() for _ in range(planner.cold_copies(W.nbytes) - 1)]
            bitmaps = [sparsegemm.BitmapMatrix.from_dense(W)]
            bitmaps += [sparsegemm.BitmapMatrix.from_dense(W)
                        for _ in range(planner.cold_copies(bitmaps[0].nbytes) - 1)]
            csrs = []
            if not args.no_csr:
                csrs = [sparsegemm.CSRMatrix.from_dense(W)]
                csrs += [sparsegemm.CSRMatrix.from_dense(W)
                         for _ in range(planner.cold_copies(csrs[0]._storage_nbytes()) - 1)]
            torch_copies = [torch.from_numpy(w) for w in dense_copies]
            for batch in args.batches:
                x = rng.standard_normal((batch, cols), dtype=np.float32)
                xt = torch.from_numpy(x)
                runners = {
                    "dense_torch": planner._rotating(
                        torch_copies, lambda w, xt=xt: F.linear(xt, w)
                    ),
                    "dense_numpy": planner._rotating(dense_copies, lambda w, x=x: x @ w.T),
                    "bitmap": planner._rotating(
                        bitmaps, lambda a, x=x: sparsegemm.linear(x, a, num_threads=threads)),
                }
                if csrs:
                    runners["csr"] = planner._rotating(
                        csrs, lambda a, x=x: sparsegemm.linear(x, a, num_threads=threads))
                expected = x.astype(np.float64) @ W.T.astype(np.float64)
                for name, run in runners.items():
                    np.testing.assert_allclose(np.asarray(run()), expected, rtol=1e-3, atol=1e-2,
                                               err_msg=name)
                # Every copy once more before the timing: very sparse bitmaps build their
                # window plan on first use, as a model's first call does.
                for run in runners.values():
                    for _ in range(max(len(dense_copies), len(bitmaps), len(csrs))):
                        run()
                with threadpool_limits(limits=threads, user_api="blas"):
                    times = planner._time_candidates(runners, args.repeats, args.rounds)
                best_dense = min(times["dense_torch"], times["dense_numpy"])
                csr = f"{best_dense / times['csr']:>11.2f}x" if "csr" in times else f"{'-':>12}"
                print(f"{shape:>11} {batch:>5} {sparsity:>8.2f} {times['bitmap'] * 1e3:>10.3f} "
                      f"{best_dense / times['bitmap']:>8.2f}x "
                      f"{streamed_bytes(bitmaps[0]) / times['bitmap'] / 1e9:>6.1f} "
                      f"{W.nbytes / best_dense / 1e9:>10.1f} {csr}  "
                      f"({times['dense_torch'] * 1e3:.3f}, {times['dense_numpy'] * 1e3:.3f})",
                      flush=True)
            del dense_copies, bitmaps, csrs, torch_copies


def streamed_bytes(bitmap: sparsegemm.BitmapMatrix) -> int:
    """Bytes a batch-1 product reads: the values and the window plan where the rows are
    walked by their stored columns (the bits are not read then), else the whole bitmap."""
    plan = bitmap.column_plan_bytes
    return bitmap.data.nbytes + plan if plan else bitmap.nbytes


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
