import ctypes, sys, time, os, numpy as np, subprocess
import torch, sparsegemm as sg
sg.set_num_threads(2); torch.set_num_threads(2)
lib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "libjit.so"))
lib.jit_create.restype = ctypes.c_void_p
lib.jit_create.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
lib.jit_code_bytes.restype = ctypes.c_size_t; lib.jit_code_bytes.argtypes = [ctypes.c_void_p]
lib.jit_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int]
lib.jit_dump.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
rng = np.random.default_rng(0)
KB = int(os.environ.get("KB", 24)); G = int(os.environ.get("G", 8))
shapes = [tuple(int(v) for v in s.split("x")) for s in os.environ.get("SHAPES", "768x768x128,3072x768x128,768x3072x128,4096x4096x64").split(",")]
sps = [float(v) for v in os.environ.get("SPS", "0.7").split(",")]
for (o, i, rows) in shapes:
    W = rng.standard_normal((o, i)).astype(np.float32)
    x = rng.standard_normal((rows, i)).astype(np.float32)
    for s in sps:
        Wm = W * (rng.random(W.shape) >= s)
        import scipy.sparse as sp
        A = sp.csr_matrix(Wm)
        indptr = A.indptr.astype(np.int64); indices = A.indices.astype(np.int32); vals = A.data.astype(np.float32)
        t0 = time.perf_counter()
        h = lib.jit_create(o, i, indptr.ctypes.data, indices.ctypes.data, vals.ctypes.data, 2, KB, G)
        tb = time.perf_counter() - t0
        if os.environ.get("DUMP"):
            lib.jit_dump(h, b"/tmp/jitcode.bin")
        out = np.empty((rows, o), np.float32)
        lib.jit_run(h, x.ctypes.data, rows, out.ctypes.data, 2)
        ref = x.astype(np.float64) @ Wm.T.astype(np.float64)
        err = np.abs(out - ref).max() / np.abs(ref).max()
        op = sg.CSRMatrix.from_dense(Wm)
        tW = torch.from_numpy(W * 1); tx = torch.from_numpy(x)
        fl = 2 * rows * A.nnz
        fns = {
            "jit": lambda: lib.jit_run(h, x.ctypes.data, rows, out.ctypes.data, 2),
            "csr": lambda: sg.linear(x, op),
            "torch": lambda: torch.nn.functional.linear(tx, tW),
        }
        times = {k: [] for k in fns}
        for rnd in range(9):
            for k, f in fns.items():
                f(); ts = []
                for _ in range(5):
                    t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
                times[k].append(min(ts))
        med = {k: np.median(v) for k, v in times.items()}
        print(f"{o}x{i} b{rows} @{s}: code {lib.jit_code_bytes(h)/1e6:.1f} MB build {tb*1e3:.0f} ms err {err:.1e} | " +
              "  ".join(f"{k} {med[k]*1e3:.3f} ms {fl/med[k]/1e9:.0f}GF" for k in fns) +
              f" | jit/csr {med['csr']/med['jit']:.2f}x jit/torch {med['torch']/med['jit']:.2f}x csr/torch {med['torch']/med['csr']:.2f}x", flush=True)
