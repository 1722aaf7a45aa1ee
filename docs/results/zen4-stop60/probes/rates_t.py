import sys, time
import numpy as np
import sparsegemm
shapes = sys.argv[1].split(","); s = float(sys.argv[2]); batches = [int(v) for v in sys.argv[3].split(",")]; threads = int(sys.argv[4])
rng = np.random.default_rng(0)
for shape in shapes:
    m, k = (int(v) for v in shape.split("x"))
    w = rng.standard_normal((m, k)).astype(np.float32); w[rng.random((m, k)) < s] = 0
    a = sparsegemm.CSRMatrix.from_dense(w)
    for batch in batches:
        x = rng.standard_normal((batch, k)).astype(np.float32)
        for _ in range(5): sparsegemm.linear(x, a, num_threads=threads)
        ts = []
        for _ in range(31):
            t0 = time.perf_counter(); sparsegemm.linear(x, a, num_threads=threads); ts.append(time.perf_counter() - t0)
        t = np.median(ts)
        print(f"{shape} b={batch} t={threads}: {t*1e3:.3f} ms  {a.nnz*batch*2/t/1e9:.0f} GF/s", flush=True)
