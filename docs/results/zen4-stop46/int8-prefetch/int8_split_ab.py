import numpy as np, sparsegemm as sg, sys, os
from sparsegemm import planner
from sparsegemm.bench.environment import last_level_cache_bytes
rng=np.random.default_rng(0)
SPS=[float(v) for v in sys.argv[1].split(",")]
llc=last_level_cache_bytes()[0]
for shape in [(4096,11008),(11008,4096)]:
    base=rng.standard_normal(shape,dtype=np.float32)
    for sp in SPS:
        W=np.where(rng.random(shape,dtype=np.float32)<sp,0,base).astype(np.float32)
        first=sg.Int8BitmapMatrix.from_dense(W)
        ops=[first]+[sg.Int8BitmapMatrix.from_dense(W) for _ in range(planner.cold_copies(first.storage_bytes, llc)-1)]
        x=rng.standard_normal((1,shape[1]),dtype=np.float32)
        ref=sg.linear(x,ops[0],num_threads=2)
        def mk(pair):
            inner=planner._rotating(ops, lambda a: sg.linear(x,a,num_threads=2))
            def f():
                if pair: os.environ["SPLIT"]=pair
                else: os.environ.pop("SPLIT", None)
                return inner()
            return f
        runners={"one": mk(None), "split2": mk("2"), "split4": mk("4")}
        for m,f in runners.items(): assert np.array_equal(f(), ref)
        t=planner._time_candidates(runners, 10, 3)
        print(shape, sp, {k:"%.3f"%(v*1e3) for k,v in t.items()}, "s2 %.2f s4 %.2f"%(t["one"]/t["split2"], t["one"]/t["split4"]), flush=True)
