"""CSR batch-64 panel choices at high sparsity, warm, alternating variants in one process.
Needs temporary switches in csr_kernels.inl (not committed): SG_CHUNK (chunk slice bytes),
SG_WIDE (wide-panel density), SG_OLD (the L1-only chunk rule). This version compares the
sparse-chunk rule with SG_OLD; the slice sweep used SG_CHUNK=49152..262144.

    PYTHONPATH=python python panel_ab.py 4096x4096,1024x4096,4096x11008 0.9 64
"""
import os, sys, time
import numpy as np
import sparsegemm
shapes = sys.argv[1].split(",")
s = float(sys.argv[2])
batch = int(sys.argv[3])
variants = {"base": {"SG_OLD": "1"}, "rule": {}}
rng = np.random.default_rng(0)
for shape in shapes:
    m, k = (int(v) for v in shape.split("x"))
    w = rng.standard_normal((m, k)).astype(np.float32)
    w[rng.random((m, k)) < s] = 0
    a = sparsegemm.CSRMatrix.from_dense(w)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    ref = x @ w.T
    res = {n: [] for n in variants}
    def setenv(env):
        for key in ("SG_WIDE", "SG_CHUNK", "SG_OLD"):
            os.environ.pop(key, None)
        os.environ.update(env)
    for n, env in variants.items():
        setenv(env)
        for _ in range(3):
            np.testing.assert_allclose(sparsegemm.linear(x, a, num_threads=2), ref, rtol=1e-3, atol=1e-3)
    for rnd in range(9):
        for n, env in variants.items():
            setenv(env)
            ts = []
            for rep in range(15):
                t0 = time.perf_counter(); sparsegemm.linear(x, a, num_threads=2); ts.append(time.perf_counter() - t0)
            res[n].append(np.median(ts) * 1e3)
    base = np.median(res["base"])
    print(f"{shape} s={s} b={batch}: " + "  ".join(f"{n} {np.median(t):.3f} ms ({base/np.median(t):.2f}x)" for n, t in res.items()), flush=True)
