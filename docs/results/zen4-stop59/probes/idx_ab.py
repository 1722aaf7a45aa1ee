"""Batch-1 bitmap: the walk by windows of stored columns against the bit walk, cold, in one
process. Needs a temporary switch in csrc/drivers/bitmap_driver.cpp (not committed):
SG_NOIDX=1 skips gemv_rows_indexed, SG_NOIDX=0 takes it at any density.

    PYTHONPATH=python python idx_ab.py 4096x4096,11008x4096,4096x11008 0.75,0.8,0.83,0.85,0.87,0.9
"""
import os, sys, time
import numpy as np
import sparsegemm
from sparsegemm import BitmapMatrix
shapes = sys.argv[1].split(",")
sparsities = [float(v) for v in sys.argv[2].split(",")]
rng = np.random.default_rng(0)
for shape in shapes:
    m, k = (int(v) for v in shape.split("x"))
    for s in sparsities:
        w = rng.standard_normal((m, k)).astype(np.float32)
        w[rng.random((m, k)) < s] = 0
        x = rng.standard_normal((1, k)).astype(np.float32)
        a0 = BitmapMatrix.from_dense(w)
        copies = max(2, int(np.ceil(96 * 2**20 / a0.nbytes)))
        mats = [a0] + [BitmapMatrix.from_dense(w) for _ in range(copies - 1)]
        ref = x.astype(np.float64) @ w.T.astype(np.float64)
        variants = {"windows": "0", "bits": "1"}
        for v in variants.values():
            os.environ["SG_NOIDX"] = v
            for a in mats:
                np.testing.assert_allclose(sparsegemm.linear(x, a, num_threads=2), ref, rtol=1e-3, atol=1e-2)
        res = {n: [] for n in variants}
        for rnd in range(9):
            for n, v in variants.items():
                os.environ["SG_NOIDX"] = v
                ts = []
                for rep in range(3):
                    for a in mats:
                        t0 = time.perf_counter(); sparsegemm.linear(x, a, num_threads=2); ts.append(time.perf_counter() - t0)
                res[n].append(np.median(ts) * 1e3)
        wv, bv = np.median(res["windows"]), np.median(res["bits"])
        print(f"{shape:>11} s={s:.2f} windows {wv:.3f} ms bits {bv:.3f} ms  windows/bits {wv/bv:.2f}", flush=True)
