"""In-process A/B of the batch-1 bitmap kernel's four-row walk: unstored lanes
zeroed in x (the default) against the merge-masked FMA (SG_MERGE=1 in a
temporary build that read it once per call, outside the walk). Medians over
interleaved rounds; warm (one weight, one thread) and cold (rotating copies
past L3, two threads)."""
import os, time, numpy as np, sparsegemm as sg

rng = np.random.default_rng(0)


def ab(label, copies, x, threads, calls, stat):
    sg.set_num_threads(threads)
    res = {"merge": [], "zero_x": []}
    for _ in range(11):
        for tag in res:
            if tag == "merge":
                os.environ["SG_MERGE"] = "1"
            else:
                os.environ.pop("SG_MERGE", None)
            ts = []
            for r in range(calls):
                op = copies[r % len(copies)]
                t0 = time.perf_counter(); sg.linear(x, op); ts.append(time.perf_counter() - t0)
            res[tag].append(stat(ts))
    a, b = np.median(res["merge"]), np.median(res["zero_x"])
    print(f"{label}: merge {a * 1e3:.3f} ms  zero_x {b * 1e3:.3f} ms  {a / b:.2f}x", flush=True)


def weight(out, inp, s):
    W = rng.standard_normal((out, inp)).astype(np.float32)
    W[rng.random(W.shape) < s] = 0
    return sg.BitmapMatrix.from_dense(W)


for out, inp in [(256, 11008), (1024, 11008)]:
    for s in (0.0, 0.5, 0.7, 0.9):
        x = rng.standard_normal((1, inp)).astype(np.float32)
        ab(f"{out}x{inp} @{s} warm 1 thread", [weight(out, inp, s)], x, 1, 40, np.min)
for out, inp in [(4096, 11008)]:
    for s in (0.0, 0.5, 0.7, 0.9):
        n = max(2, int(120e6 // (out * inp * ((1 - s) * 4 + 0.125))) + 1)
        x = rng.standard_normal((1, inp)).astype(np.float32)
        ab(f"{out}x{inp} @{s} cold 2 threads ({n} copies)", [weight(out, inp, s) for _ in range(n)],
           x, 2, 3 * n, np.median)
