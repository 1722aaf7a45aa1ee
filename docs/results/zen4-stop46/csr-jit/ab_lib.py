import numpy as np, sparsegemm as sg, sparsegemm._core as C, time, sys, os, torch
sg.set_num_threads(2); torch.set_num_threads(2)
rng = np.random.default_rng(0)
shapes = [tuple(int(v) for v in s.split("x")) for s in sys.argv[1].split(",")]
sps = [float(v) for v in sys.argv[2].split(",")]
for (o, i, rows) in shapes:
    for s in sps:
        W = rng.standard_normal((o, i)).astype(np.float32) * (rng.random((o, i)) >= s)
        x = rng.standard_normal((rows, i)).astype(np.float32)
        op = sg.CSRMatrix.from_dense(W)
        tW = torch.from_numpy(W); tx = torch.from_numpy(x)
        C.set_use_csr_jit(True); t0=time.perf_counter(); sg.linear(x, op); tc=time.perf_counter()-t0
        def jit(): C.set_use_csr_jit(True); sg.linear(x, op)
        def csr(): C.set_use_csr_jit(False); sg.linear(x, op)
        fns = {"jit": jit, "csr": csr, "torch": lambda: torch.nn.functional.linear(tx, tW)}
        times = {k: [] for k in fns}
        for rnd in range(9):
            for k, f in fns.items():
                f(); ts = []
                for _ in range(5):
                    t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
                times[k].append(min(ts))
        med = {k: np.median(v) for k, v in times.items()}
        fl = 2 * rows * np.count_nonzero(W)
        print(f"{o}x{i} b{rows} @{s}: first {tc*1e3:.0f} ms | " + "  ".join(f"{k} {med[k]*1e3:.3f} ms {fl/med[k]/1e9:.0f}GF" for k in fns) +
              f" | jit/csr {med['csr']/med['jit']:.2f}x jit/torch {med['torch']/med['jit']:.2f}x csr/torch {med['torch']/med['csr']:.2f}x", flush=True)
