"""In-process A/B of the int8 batch-1 walk by stored columns against the bitmap walk, cold.

    PYTHONPATH=python python docs/results/zen4-stop47/int8-indexed/indexed_ab.py 0.9,0.95 [2,4,8]

The optional second argument gives batches other than 1 (for threshold/: on a
temporary build that let the walk by stored columns take them).

Both walks run in one build (_core.set_use_int8_indexed_walk, switched before each
call); every copy of the weight is called once with each walk first, so the index
plans are built before the timing. Each contender rotates through copies of its
weight exceeding twice the last-level cache, as the floors scripts do.
"""
import sys

import numpy as np

import sparsegemm as sg
from sparsegemm import _core, planner
from sparsegemm.bench.environment import last_level_cache_bytes

sparsities = [float(v) for v in sys.argv[1].split(",")]
batches = [int(v) for v in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1]
rng = np.random.default_rng(0)
llc = last_level_cache_bytes()[0]

for shape in [(4096, 11008), (11008, 4096)]:
    base = rng.standard_normal(shape, dtype=np.float32)
    for sparsity in sparsities:
        W = np.where(rng.random(shape, dtype=np.float32) < sparsity, 0, base).astype(np.float32)
        first = sg.Int8BitmapMatrix.from_dense(W)
        ops = [first] + [sg.Int8BitmapMatrix.from_dense(W)
                         for _ in range(planner.cold_copies(first.storage_bytes, llc) - 1)]
        for batch in batches:
            x = rng.standard_normal((batch, shape[1]), dtype=np.float32)
            reference = sg.linear(x, ops[0], num_threads=2)

            def variant(indexed, x=x):
                inner = planner._rotating(ops, lambda a: sg.linear(x, a, num_threads=2))

                def run():
                    _core.set_use_int8_indexed_walk(indexed)
                    return inner()
                return run

            runners = {"bitmap": variant(False), "indexed": variant(True)}
            for run in runners.values():
                for _ in ops:
                    assert np.array_equal(run(), reference)
            times = planner._time_candidates(runners, 10, 5)
            print(shape, sparsity, *([f"batch {batch}"] if batch > 1 else []),
                  {k: f"{v * 1e3:.3f} ms" for k, v in times.items()},
                  f"indexed/bitmap speed {times['bitmap'] / times['indexed']:.2f}x",
                  f"plan {first.index_plan_bytes / first.storage_bytes:.2f} of storage",
                  flush=True)
