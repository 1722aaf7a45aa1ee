"""Int8 batch-1 call at one sparsity on 1 and/or 2 threads, cold (copies past twice the L3).

    PYTHONPATH=python python docs/results/zen4-stop48/int8_walk_threads.py 0.9 1   # 1 thread
    PYTHONPATH=python python docs/results/zen4-stop48/int8_walk_threads.py 0.9 2   # 2 threads

Give one thread count per process: alternating 1 and 2 threads in one process
slowed the 2-thread calls about 2x.
"""
import sys

import numpy as np

import sparsegemm as sg
from sparsegemm import planner
from sparsegemm.bench.environment import last_level_cache_bytes

rng = np.random.default_rng(0)
llc = last_level_cache_bytes()[0]
sparsity = float(sys.argv[1]) if len(sys.argv) > 1 else 0.9
threads = [int(v) for v in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1, 2]
for shape in [(4096, 11008), (11008, 4096)]:
    base = rng.standard_normal(shape, dtype=np.float32)
    W = np.where(rng.random(shape, dtype=np.float32) < sparsity, 0, base).astype(np.float32)
    first = sg.Int8BitmapMatrix.from_dense(W)
    ops = [first] + [sg.Int8BitmapMatrix.from_dense(W)
                     for _ in range(planner.cold_copies(first.storage_bytes, llc) - 1)]
    x = rng.standard_normal((1, shape[1]), dtype=np.float32)
    runners = {f"t{t}": planner._rotating(ops, lambda a, t=t, x=x: sg.linear(x, a, num_threads=t))
               for t in threads}
    for run in runners.values():
        for _ in ops:
            run()  # builds every copy's index plan before the timing
    times = planner._time_candidates(runners, 10, 5)
    print(shape, sparsity, {k: f"{v * 1e3:.3f} ms" for k, v in times.items()}, flush=True)
