"""Row quads at several chunk slices against rows at the default (temporary AB_NOQUADS / AB_QCHUNK)."""
import os, sys, time
import numpy as np
import sparsegemm
shapes = sys.argv[1].split(",")
sparsities = [float(v) for v in sys.argv[2].split(",")]
batch = int(sys.argv[3])
slices = sys.argv[4].split(",")
rng = np.random.default_rng(0)
if os.environ.get("AB_ISA"): sparsegemm.set_isa(os.environ["AB_ISA"])
def setenv(env):
    for key in ("AB_NOQUADS", "AB_QCHUNK"): os.environ.pop(key, None)
    os.environ.update(env)
for shape in shapes:
    m, k = (int(v) for v in shape.split("x"))
    for s in sparsities:
        w = rng.standard_normal((m, k)).astype(np.float32)
        w[rng.random((m, k)) < s] = 0
        x = rng.standard_normal((batch, k)).astype(np.float32)
        ref = x @ w.T
        variants = {"rows": {"AB_NOQUADS": "1"}, "q32": {}}
        for sl in slices: variants[f"q{sl}"] = {"AB_QCHUNK": sl}
        mats = {}
        for name, env in variants.items():
            setenv(env)
            a = sparsegemm.CSRMatrix.from_dense(w)
            for _ in range(3):
                np.testing.assert_allclose(sparsegemm.linear(x, a, num_threads=2), ref, rtol=2e-3, atol=2e-3)
            mats[name] = a
        res = {n: [] for n in mats}
        for rnd in range(7):
            for n, a in mats.items():
                setenv(variants[n])
                ts = []
                for rep in range(11):
                    t0 = time.perf_counter(); sparsegemm.linear(x, a, num_threads=2); ts.append(time.perf_counter() - t0)
                res[n].append(np.median(ts) * 1e3)
        base = np.median(res["rows"])
        print(f"{shape} s={s} b={batch}: " + "  ".join(f"{n} {np.median(t):.3f} ({base/np.median(t):.2f}x)" for n, t in res.items()), flush=True)
