"""Batch-1 bitmap, the expand walk against the compress walk, cold (copies rotating through
96 MiB), 7 rounds alternating in one process (_core.set_bitmap_walk).

    PYTHONPATH=python python walk_ab.py 4096x4096,11008x4096,4096x11008 0,0.25,0.5,0.7,0.8 [f64]
"""
import os, sys, time
import numpy as np
import sparsegemm
from sparsegemm import BitmapMatrix, _core
shapes = sys.argv[1].split(",")
sparsities = [float(v) for v in sys.argv[2].split(",")]
dtype = np.float64 if len(sys.argv) > 3 and sys.argv[3] == "f64" else np.float32
rng = np.random.default_rng(0)
for shape in shapes:
    m, k = (int(v) for v in shape.split("x"))
    for s in sparsities:
        w = rng.standard_normal((m, k)).astype(dtype)
        w[rng.random((m, k)) < s] = 0
        x = rng.standard_normal((1, k)).astype(dtype)
        a0 = BitmapMatrix.from_dense(w)
        copies = max(2, int(np.ceil(96 * 2**20 / a0.nbytes)))
        mats = [a0] + [BitmapMatrix.from_dense(w) for _ in range(copies - 1)]
        ref = x.astype(np.float64) @ w.T.astype(np.float64)
        res = {"expand": [], "compress": []}
        for walk in res:
            _core.set_bitmap_walk(walk)
            np.testing.assert_allclose(sparsegemm.linear(x, a0, num_threads=2), ref, rtol=1e-3, atol=1e-2)
        for rnd in range(7):
            for walk in res:
                _core.set_bitmap_walk(walk)
                ts = []
                for rep in range(3):
                    for a in mats:
                        t0 = time.perf_counter(); sparsegemm.linear(x, a, num_threads=2); ts.append(time.perf_counter() - t0)
                res[walk].append(np.median(ts) * 1e3)
        e, c = np.median(res["expand"]), np.median(res["compress"])
        print(f"{shape:>11} {dtype.__name__} s={s:.2f} expand {e:.3f} ms compress {c:.3f} ms  ratio {e/c:.2f}  GB/s {a0.nbytes/c/1e6:.1f}", flush=True)
