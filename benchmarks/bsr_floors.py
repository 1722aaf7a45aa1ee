"""BSR against dense nn.Linear on block-pruned weights: the numbers the floors ask for.

For each batch and sparsity it block-prunes a random weight, checks every
contender against the dense result, then times them interleaved (median of
rounds, see sparsegemm.planner._time_candidates): torch F.linear (dense),
numpy ``x @ W.T`` (dense) and sparsegemm.linear with each BSR block shape.
Speedups are over torch and over the faster dense contender. Run on a quiet
machine (``uptime`` load < 0.5); numbers from a busy one are not evidence.

    OMP_WAIT_POLICY=passive KMP_BLOCKTIME=1 PYTHONPATH=python \
        python benchmarks/bsr_floors.py --threads 2 --size 4096 --batches 1 16 64 256 \
        --sparsities 0.3 0.4 0.5 0.9
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import sparsegemm
from sparsegemm import planner
from sparsegemm.timing import thread_limits

# The block shapes the planner may choose, from the kernel catalogue.
BLOCKSIZES = [b for b in planner.CANDIDATES.values() if b is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="W is size x size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.4, 0.9])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch.nn.functional as F
    from threadpoolctl import threadpool_info

    import torch

    torch.set_num_threads(args.threads)
    sparsegemm.show_config()
    print("threadpools:", [(i["internal_api"], i.get("version"), i["num_threads"])
                           for i in threadpool_info()])
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((args.size, args.size)).astype(np.float32)
    print(f"{'batch':>5} {'sparsity':>8} {'format':>10} {'ms':>9} {'vs torch':>9} "
          f"{'vs best dense':>13}")
    for sparsity in args.sparsities:
        for blocksize in BLOCKSIZES:
            W = sparsegemm.block_prune(dense, blocksize, sparsity)
            A = sparsegemm.BSRMatrix.from_dense(W, blocksize)
            Wt = torch.from_numpy(W)
            for batch in args.batches:
                x = rng.standard_normal((batch, args.size)).astype(np.float32)
                xt = torch.from_numpy(x)
                runners = {
                    "dense_torch": lambda xt=xt, Wt=Wt: F.linear(xt, Wt),
                    "dense_numpy": lambda x=x, W=W: x @ W.T,
                    "bsr": lambda x=x, A=A: sparsegemm.linear(x, A, num_threads=args.threads),
                }
                expected = x.astype(np.float64) @ W.T.astype(np.float64)
                for name, run in runners.items():
                    np.testing.assert_allclose(np.asarray(run()), expected, rtol=1e-3, atol=1e-2,
                                               err_msg=name)
                with thread_limits(args.threads):
                    times = planner._time_candidates(runners, args.repeats, args.rounds)
                best_dense = min(times["dense_torch"], times["dense_numpy"])
                label = f"bsr{blocksize[0]}x{blocksize[1]}"
                print(f"{batch:>5} {sparsity:>8.2f} {label:>10} {times['bsr'] * 1e3:>9.3f} "
                      f"{times['dense_torch'] / times['bsr']:>8.2f}x "
                      f"{best_dense / times['bsr']:>12.2f}x   "
                      f"(torch {times['dense_torch'] * 1e3:.3f} ms,"
                      f" numpy {times['dense_numpy'] * 1e3:.3f} ms)", flush=True)


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
