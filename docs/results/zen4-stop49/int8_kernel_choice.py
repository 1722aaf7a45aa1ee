import time, numpy as np, torch, warnings
from torch import nn
from sparsegemm.torch import SparseLinearInt8
torch.set_num_threads(2)
def med(f, n=50):
    for _ in range(5): f()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return np.median(ts)*1e6
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for (o,i) in [(768,768),(3072,768),(768,3072)]:
      for s in (0.5,0.7,0.9):
        lin=nn.Linear(i,o)
        w=lin.weight.data; thr=w.abs().flatten().kthvalue(int(s*w.numel())).values; w[w.abs()<=thr]=0
        q=torch.ao.quantization.quantize_dynamic(nn.Sequential(lin),{nn.Linear},dtype=torch.qint8)
        bm=SparseLinearInt8.from_dense(lin); au=SparseLinearInt8.from_dense(lin, kernel="auto")
        out=[]
        for b in (1,16,128):
            x=torch.randn(b,i)
            with torch.inference_mode():
                t0=time.perf_counter(); au(x); tdec=time.perf_counter()-t0
                tq,tb,ta=med(lambda: q(x)),med(lambda: bm(x)),med(lambda: au(x))
            out.append(f"b{b} q {tq:.0f} bitmap {tb:.0f} auto {ta:.0f} ({au.decisions[max(1,b) if b&(b-1)==0 else 0].kernel}, decide {tdec*1e3:.0f}ms)")
        print(f"{o}x{i} {s}: "+"; ".join(out), flush=True)
