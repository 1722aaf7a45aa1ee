"""In-process A/B of int8 batch-1 walk variants, cold (see README.md).

    python int8_walk_ab.py prefetch 0.7,0.9   # _core.set_bitmap_prefetch near / far / off
    python int8_walk_ab.py PAIR 0.9,0.95      # env PAIR unset / "1"
    python int8_walk_ab.py SPLIT 0.9,0.95     # env SPLIT unset / "2" / "4"

Each variant switch existed only in a temporary build (the kept kernel has none).
"""
import os
import sys

import numpy as np

import sparsegemm as sg
from sparsegemm import _core, planner
from sparsegemm.bench.environment import last_level_cache_bytes

SWITCHES = {"prefetch": ("near", "far", "off"), "PAIR": (None, "1"), "SPLIT": (None, "2", "4")}
switch = sys.argv[1]
sparsities = [float(v) for v in sys.argv[2].split(",")]
rng = np.random.default_rng(0)
llc = last_level_cache_bytes()[0]


def select(value):
    if switch == "prefetch":
        _core.set_bitmap_prefetch(value)
    elif value is None:
        os.environ.pop(switch, None)
    else:
        os.environ[switch] = value


for shape in [(4096, 11008), (11008, 4096)]:
    base = rng.standard_normal(shape, dtype=np.float32)
    for sparsity in sparsities:
        W = np.where(rng.random(shape, dtype=np.float32) < sparsity, 0, base).astype(np.float32)
        first = sg.Int8BitmapMatrix.from_dense(W)
        ops = [first] + [sg.Int8BitmapMatrix.from_dense(W)
                         for _ in range(planner.cold_copies(first.storage_bytes, llc) - 1)]
        x = rng.standard_normal((1, shape[1]), dtype=np.float32)
        reference = sg.linear(x, ops[0], num_threads=2)

        def variant(value):
            inner = planner._rotating(ops, lambda a: sg.linear(x, a, num_threads=2))

            def run():
                select(value)
                return inner()
            return run

        runners = {str(value): variant(value) for value in SWITCHES[switch]}
        for run in runners.values():
            assert np.array_equal(run(), reference)
        times = planner._time_candidates(runners, 10, 3)
        first_name = next(iter(times))
        print(shape, sparsity, {k: f"{v * 1e3:.3f} ms" for k, v in times.items()},
              {f"{k}/{first_name}": round(times[first_name] / v, 2) for k, v in times.items()},
              flush=True)
