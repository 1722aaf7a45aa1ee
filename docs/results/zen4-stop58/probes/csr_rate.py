# sparsegemm.linear against torch dense at MiniLM, MLP and BERT shapes (1,024 / 64 / 128 rows),
# 2 threads, useful GFLOP/s:  PYTHONPATH=python python csr_rate.py
import sys, time, numpy as np, sparsegemm as sg, statistics, torch
torch.set_num_threads(2)
rng = np.random.default_rng(0)
def bench(f, n=20, rounds=7):
    ts=[]
    for _ in range(rounds):
        t0=time.perf_counter()
        for _ in range(n): f()
        ts.append((time.perf_counter()-t0)/n)
    return statistics.median(ts)
for (out, inp, rows) in [(1152,384,1024),(384,384,1024),(1536,384,1024),(384,1536,1024),(4096,4096,64),(3072,768,128),(768,3072,128)]:
  for sp in (0.7,0.9):
    w = rng.standard_normal((out, inp), dtype=np.float32); w[rng.random((out, inp)) < sp] = 0
    x = rng.standard_normal((rows, inp), dtype=np.float32)
    m = sg.CSRMatrix.from_dense(w) if hasattr(sg,'CSRMatrix') else None
    tw = torch.from_numpy(w); tx = torch.from_numpy(x)
    td = bench(lambda: torch.nn.functional.linear(tx, tw))
    ts = bench(lambda: sg.linear(x, m, num_threads=2))
    useful = 2*rows*np.count_nonzero(w)
    print(f"{out}x{inp} rows {rows} sp {sp}: dense {td*1e3:.3f} ms ({2*rows*out*inp/td/1e9:.0f} GF/s) csr {ts*1e3:.3f} ms ({useful/ts/1e9:.0f} useful GF/s) speedup {td/ts:.2f}")
