"""CSR chunked panel kernel: row quads against one row at a time, warm, in one process
(temporary AB_NOQUADS switch read when a matrix first builds its chunk order)."""
import os, sys, time
import numpy as np
import sparsegemm
shapes = sys.argv[1].split(",")
sparsities = [float(v) for v in sys.argv[2].split(",")]
batch = int(sys.argv[3])
dtype = np.float32 if len(sys.argv) < 5 else np.dtype(sys.argv[4]).type
rng = np.random.default_rng(0)
for shape in shapes:
    m, k = (int(v) for v in shape.split("x"))
    for s in sparsities:
        w = rng.standard_normal((m, k)).astype(dtype)
        w[rng.random((m, k)) < s] = 0
        x = rng.standard_normal((batch, k)).astype(dtype)
        ref = x @ w.T
        mats = {}
        for name, env in (("rows", "1"), ("quads", None)):
            os.environ.pop("AB_NOQUADS", None)
            if env: os.environ["AB_NOQUADS"] = env
            a = sparsegemm.CSRMatrix.from_dense(w)
            for _ in range(3):
                np.testing.assert_allclose(sparsegemm.linear(x, a, num_threads=2), ref, rtol=2e-3, atol=2e-3)
            mats[name] = a
        res = {n: [] for n in mats}
        for rnd in range(9):
            for n, a in mats.items():
                ts = []
                for rep in range(11):
                    t0 = time.perf_counter(); sparsegemm.linear(x, a, num_threads=2); ts.append(time.perf_counter() - t0)
                res[n].append(np.median(ts) * 1e3)
        base = np.median(res["rows"])
        print(f"{shape} s={s} b={batch}: " + "  ".join(f"{n} {np.median(t):.3f} ms ({base/np.median(t):.2f}x)" for n, t in res.items()), flush=True)
