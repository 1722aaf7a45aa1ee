import time, numpy as np, sparsegemm as sg
rng=np.random.default_rng(0)
def med(f,n=200):
    for _ in range(10): f()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return np.median(ts)*1e6
for cols in (4096, 11008):
    W=rng.standard_normal((64,cols)).astype(np.float32); W[rng.random(W.shape)<0.9]=0
    Q=sg.Int8BitmapMatrix.from_dense(W)
    for b in (1,16):
        x=rng.standard_normal((b,cols)).astype(np.float32)
        print(cols, b, "1T %.1f us" % med(lambda: Q.linear(x, num_threads=1)), "2T %.1f us" % med(lambda: Q.linear(x, num_threads=2)))
