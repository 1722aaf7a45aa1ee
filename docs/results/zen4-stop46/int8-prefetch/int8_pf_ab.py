import numpy as np, sparsegemm as sg, sparsegemm._core as C, sys
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
        def mk(mode):
            inner=planner._rotating(ops, lambda a: sg.linear(x,a,num_threads=2))
            def f():
                C.set_bitmap_prefetch(mode); return inner()
            return f
        runners={m: mk(m) for m in ("near","far","off")}
        for m,f in runners.items(): assert np.array_equal(f(), ref)
        t=planner._time_candidates(runners, 10, 3)
        print(shape, sp, {k:"%.3f"%(v*1e3) for k,v in t.items()}, "far/near %.2f off/near %.2f"%(t['near']/t['far'], t['near']/t['off']), flush=True)
