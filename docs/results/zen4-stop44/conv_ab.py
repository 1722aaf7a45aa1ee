import os, time, numpy as np, sparsegemm as sg
sg.set_num_threads(2)
rng = np.random.default_rng(0)
# (cin, cout, k, size, stride)
for cin, cout, k, size, stride in [(256, 256, 3, 14, 1), (512, 512, 3, 7, 1), (128, 128, 3, 28, 1), (2048, 512, 1, 7, 1)]:
    for s in (0.7, 0.9):
        W = (rng.standard_normal((cout, cin * k * k)) * (rng.random((cout, cin * k * k)) >= s)).astype(np.float32)
        op = sg.CSRMatrix.from_dense(W)
        x = rng.standard_normal((1, cin, size, size)).astype(np.float32)
        res = {"old": [], "new": []}
        for rnd in range(9):
            for tag in res:
                if tag == "old": os.environ["SG_NO_WIDE"] = "1"
                else: os.environ.pop("SG_NO_WIDE", None)
                sg.conv2d(x, op, k, stride=stride, padding=k // 2)
                ts = []
                for _ in range(5):
                    t0 = time.perf_counter(); sg.conv2d(x, op, k, stride=stride, padding=k // 2); ts.append(time.perf_counter() - t0)
                res[tag].append(min(ts))
        o, n = np.median(res["old"]), np.median(res["new"])
        print(f"conv {cin}->{cout} k{k} {size}x{size} @{s}: old {o*1e3:.3f} ms new {n*1e3:.3f} ms  {o/n:.2f}x", flush=True)
