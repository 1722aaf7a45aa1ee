"""Int8 call at one sparsity, batch and thread count, cold (copies past twice the L3).

    PYTHONPATH=<tree> python docs/results/zen4-stop48/int8_small_batch.py 0.9 16 2
"""
import sys

import numpy as np

import sparsegemm as sg
from sparsegemm import planner
from sparsegemm.bench.environment import last_level_cache_bytes

rng = np.random.default_rng(0)
llc = last_level_cache_bytes()[0]
sparsity, batch, threads = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = []
for shape in [(4096, 11008), (11008, 4096)]:
    base = rng.standard_normal(shape, dtype=np.float32)
    W = np.where(rng.random(shape, dtype=np.float32) < sparsity, 0, base).astype(np.float32)
    first = sg.Int8BitmapMatrix.from_dense(W)
    ops = [first] + [sg.Int8BitmapMatrix.from_dense(W)
                     for _ in range(planner.cold_copies(first.storage_bytes, llc) - 1)]
    x = rng.standard_normal((batch, shape[1]), dtype=np.float32)
    run = planner._rotating(ops, lambda a, x=x: sg.linear(x, a, num_threads=threads))
    for _ in ops:
        run()  # builds every copy's plan before the timing
    times = planner._time_candidates({"run": run}, 10, 5)
    out.append(f"{shape[0]}x{shape[1]} {times['run'] * 1e3:.3f}")
print(sparsity, f"batch {batch}", f"t{threads}", " ".join(out), flush=True)
