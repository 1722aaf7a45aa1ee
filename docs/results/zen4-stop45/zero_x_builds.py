import time, numpy as np, sparsegemm as sg
rng = np.random.default_rng(0)
def weight(out, inp, s):
    W = rng.standard_normal((out, inp)).astype(np.float32); W[rng.random(W.shape) < s] = 0
    return sg.BitmapMatrix.from_dense(W)
out = []
sg.set_num_threads(1)
for s in (0.5, 0.7):
    op = weight(256, 11008, s); x = rng.standard_normal((1, 11008)).astype(np.float32)
    ts = []
    for r in range(600):
        t0 = time.perf_counter(); sg.linear(x, op); ts.append(time.perf_counter() - t0)
    out.append(f"w{s}:{min(ts)*1e3:.3f}")
sg.set_num_threads(2)
for s in (0.5, 0.7, 0.9):
    n = max(2, int(120e6 // (4096 * 11008 * ((1 - s) * 4 + 0.125))) + 1)
    copies = [weight(4096, 11008, s) for _ in range(n)]
    x = rng.standard_normal((1, 11008)).astype(np.float32)
    meds = []
    for rnd in range(7):
        ts = []
        for r in range(3 * n):
            t0 = time.perf_counter(); sg.linear(x, copies[r % n]); ts.append(time.perf_counter() - t0)
        meds.append(np.median(ts))
    out.append(f"c{s}:{np.median(meds)*1e3:.3f}")
print(" ".join(out))
