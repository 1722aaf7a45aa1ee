import time, numpy as np, sparsegemm as sg
rng=np.random.default_rng(0)
def med(f,n=20):
    for _ in range(3): f()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return np.median(ts)*1e3
for (o,i) in [(768,3072),(3072,768),(4096,4096)]:
    W=rng.standard_normal((o,i)).astype(np.float32); W[rng.random((o,i))<0.9]=0
    Q=sg.Int8BitmapMatrix.from_dense(W); C=sg.CSRMatrix.from_dense(W)
    row=[]
    for b in (16,32,64,128):
        x=rng.standard_normal((b,i)).astype(np.float32)
        tq=med(lambda: Q.linear(x, num_threads=2)); tc=med(lambda: sg.linear(x,C,num_threads=2))
        row.append(f"b{b} int8 {tq:.3f} csr {tc:.3f}")
    print(f"{o}x{i}: "+"; ".join(row), flush=True)
