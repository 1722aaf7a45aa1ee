import numpy as np, sparsegemm as sg, sparsegemm._core as C, time, sys
sg.set_num_threads(2)
rng = np.random.default_rng(0)
def mk(o,i,s):
    W = rng.standard_normal((o, i)).astype(np.float32) * (rng.random((o, i)) >= s)
    return sg.CSRMatrix.from_dense(W)
s=float(sys.argv[1])
A = mk(2304,768,s); B = mk(3072,768,s); Bt = mk(768,3072,s)
x = rng.standard_normal((128, 768)).astype(np.float32); h = rng.standard_normal((128, 3072)).astype(np.float32)
for mode in (True, False)*3:
    C.set_use_csr_jit(mode)
    tw=[]; tc=[]
    for _ in range(15):
        t0=time.perf_counter(); sg.linear(x, A); tw.append(time.perf_counter()-t0)
    for _ in range(15):
        sg.linear(x, B); sg.linear(h, Bt)
        t0=time.perf_counter(); sg.linear(x, A); tc.append(time.perf_counter()-t0)
    print(mode, "warm %.3f ms  after others %.3f ms" % (np.median(tw)*1e3, np.median(tc)*1e3))
