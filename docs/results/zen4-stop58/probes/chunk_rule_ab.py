# In-process A/B of the CSR chunk rule (needs a build whose panel_chunk_columns reads
# SG_MINSEG as the minimum mean segment, a temporary patch; not in the library).
import os, sys, time, statistics, numpy as np, sparsegemm as sg
rng = np.random.default_rng(0)
def t(f, n):
    f(); t0=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-t0)/n
for out, inp, rows, sp in [(1152,384,1024,0.8),(1152,384,1024,0.85),(1536,384,1024,0.8),(64,256,3136,0.8),(128,512,784,0.85)]:
    w = rng.standard_normal((out, inp), dtype=np.float32); w[rng.random((out, inp)) < sp] = 0
    m = sg.CSRMatrix.from_dense(w); x = rng.standard_normal((rows, inp), dtype=np.float32)
    f = lambda: sg.linear(x, m, num_threads=2)
    os.environ["SG_MINSEG"]="48"; c48 = m._handle.panel_chunk_columns
    os.environ["SG_MINSEG"]="8"; c8 = m._handle.panel_chunk_columns
    n = max(3, int(0.02 / t(f, 3)))
    res = {"48": [], "8": []}
    for r in range(12):
        for k in (("48","8") if r%2==0 else ("8","48")):
            os.environ["SG_MINSEG"]=k; res[k].append(t(f, n))
    ratios = sorted(a/b for a,b in zip(res["48"], res["8"]))
    print(f"{out}x{inp} n={rows} s={sp} chunks {c48}/{c8}: rule48 {statistics.median(res['48'])*1e3:.3f} ms, rule8 {statistics.median(res['8'])*1e3:.3f} ms, 48/8 median {statistics.median(ratios):.3f} ({ratios[0]:.2f}-{ratios[-1]:.2f})", flush=True)
