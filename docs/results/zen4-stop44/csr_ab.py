import sys, os, time, numpy as np, sparsegemm as sg
sg.set_num_threads(2)
rng = np.random.default_rng(0)
# configs: list of dicts of env
cfgs = {}
for arg in sys.argv[1:]:
    tag, _, rest = arg.partition(":")
    cfgs[tag] = dict(kv.split("=") for kv in rest.split(",") if kv)
keys = {k for c in cfgs.values() for k in c}
def apply(c):
    for k in keys: os.environ.pop(k, None)
    os.environ.update(c)
shapes=[tuple(int(v) for v in s.split("x")) for s in os.environ.get("SHAPES","768x768x128,3072x768x128,768x3072x128,4096x4096x64,4096x1024x64,1024x4096x64").split(",")]
sps=[float(v) for v in os.environ.get("SPS","0.7,0.9").split(",")]
for (o,i,rows) in shapes:
    W = rng.standard_normal((o,i)).astype(np.float32)
    x = rng.standard_normal((rows,i)).astype(np.float32)
    for s in sps:
        Wm = W*(rng.random(W.shape)>=s)
        op = sg.CSRMatrix.from_dense(Wm)
        fl = 2*rows*np.count_nonzero(Wm)
        ref = x @ Wm.T
        times = {t: [] for t in cfgs}
        for c in cfgs.values():
            apply(c); y = sg.linear(x, op); assert np.allclose(y, ref, atol=1e-3, rtol=1e-3)
        for rnd in range(9):
            for t, c in cfgs.items():
                apply(c); sg.linear(x, op)
                ts=[]
                for _ in range(5):
                    t0=time.perf_counter(); sg.linear(x, op); ts.append(time.perf_counter()-t0)
                times[t].append(min(ts))
        med = {t: np.median(v) for t, v in times.items()}
        base = med[next(iter(cfgs))]
        print(f"{o}x{i}b{rows}@{s}: " + "  ".join(f"{t} {fl/m/1e9:.0f}GF {base/m:.2f}x" for t, m in med.items()), flush=True)
