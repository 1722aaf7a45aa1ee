"""Int8 call at one sparsity, batch and thread count, cold (copies past twice the L3).

    PYTHONPATH=<tree> python docs/results/zen4-stop48/int8_small_batch.py 0.9 16 2
"""
import sys, numpy as np, sparsegemm as sg
from sparsegemm import planner
from sparsegemm.bench.environment import last_level_cache_bytes
rng = np.random.default_rng(0); llc = last_level_cache_bytes()[0]
sp = float(sys.argv[1]); batch = int(sys.argv[2]); t = int(sys.argv[3])
out = []
for shape in [(4096, 11008), (11008, 4096)]:
    base = rng.standard_normal(shape, dtype=np.float32)
    W = np.where(rng.random(shape, dtype=np.float32) < sp, 0, base).astype(np.float32)
    first = sg.Int8BitmapMatrix.from_dense(W)
    ops = [first] + [sg.Int8BitmapMatrix.from_dense(W) for _ in range(planner.cold_copies(first.storage_bytes, llc) - 1)]
    x = rng.standard_normal((batch, shape[1]), dtype=np.float32)
    run = planner._rotating(ops, lambda a: sg.linear(x, a, num_threads=t))
    for _ in ops: run()
    times = planner._time_candidates({"r": run}, 10, 5)
    out.append(f"{shape[0]}x{shape[1]} {times['r']*1e3:.3f}")
print(sp, f"batch {batch}", f"t{t}", " ".join(out), flush=True)
