"""Batch 2-4 bitmap: tile kernel (SG_TILE set, temporary switch) against the compress walk
over a few vectors, cold, alternating in one process."""
import os, sys, time
import numpy as np
import sparsegemm
from sparsegemm import BitmapMatrix
shapes = sys.argv[1].split(",")
sparsities = [float(v) for v in sys.argv[2].split(",")]
batches = [int(v) for v in sys.argv[3].split(",")]
rng = np.random.default_rng(0)
for shape in shapes:
    m, k = (int(v) for v in shape.split("x"))
    for s in sparsities:
        w = rng.standard_normal((m, k)).astype(np.float32)
        w[rng.random((m, k)) < s] = 0
        a0 = BitmapMatrix.from_dense(w)
        copies = max(2, int(np.ceil(96 * 2**20 / a0.nbytes)))
        mats = [a0] + [BitmapMatrix.from_dense(w) for _ in range(copies - 1)]
        for batch in batches:
            x = rng.standard_normal((batch, k)).astype(np.float32)
            res = {"tile": [], "walk": []}
            for rnd in range(7):
                for n in res:
                    if n == "tile":
                        os.environ["SG_TILE"] = "1"
                    else:
                        os.environ.pop("SG_TILE", None)
                    ts = []
                    for rep in range(3):
                        for a in mats:
                            t0 = time.perf_counter(); sparsegemm.linear(x, a, num_threads=2); ts.append(time.perf_counter() - t0)
                    res[n].append(np.median(ts) * 1e3)
            t, wv = np.median(res["tile"]), np.median(res["walk"])
            print(f"{shape:>11} s={s:.2f} batch {batch}: tile {t:.3f} ms walk {wv:.3f} ms  tile/walk {t/wv:.2f}", flush=True)
