import numpy as np, time, sparsegemm as sg
from sparsegemm import planner
from threadpoolctl import threadpool_limits
rng=np.random.default_rng(0)
n=4096
Ws=[rng.standard_normal((n,n),dtype=np.float32) for _ in range(3)]
x=rng.standard_normal((1,n),dtype=np.float32)
Bs=[sg.BitmapMatrix.from_dense(np.where(rng.random((n,n),dtype=np.float32)<0.7,0,Ws[0])) for _ in range(4)]
with threadpool_limits(limits=2, user_api="blas"):
    runners={"dense1": planner._rotating(Ws[:1], lambda w: x@w.T), "dense2": planner._rotating(Ws[:2], lambda w: x@w.T), "dense3": planner._rotating(Ws[:3], lambda w: x@w.T),
             "bitmap3": planner._rotating(Bs[:3], lambda b: sg.linear(x,b,num_threads=2)), "bitmap4": planner._rotating(Bs[:4], lambda b: sg.linear(x,b,num_threads=2))}
    for rep in range(3):
        t=planner._time_candidates(runners, 10, 3)
        print({k: "%.3f ms %.1f GB/s"%(v*1e3, (n*n*4 if k.startswith('dense') else Bs[0]._storage_nbytes())/v/1e9) for k,v in t.items()})
