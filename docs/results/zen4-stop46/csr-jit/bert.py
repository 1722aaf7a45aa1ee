import torch, time, copy, numpy as np, sys, sparsegemm as sg, sparsegemm._core as C
from sparsegemm.bench.e2e import _hf_bert_layer, prune_model
from sparsegemm.bench.workloads import parse_pattern
from sparsegemm.torch import sparsify
torch.manual_seed(0); torch.set_num_threads(2); sg.set_num_threads(2)
sp = float(sys.argv[1])
model, x = _hf_bert_layer()
model.eval()
with torch.no_grad():
    prune_model(model, sp, parse_pattern("unstructured"))
    dense = copy.deepcopy(model)
    sm = sparsify(model)
def timeit(f, n=15):
    f(); ts=[]
    for _ in range(n):
        t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    return np.median(ts)
with torch.inference_mode():
    res = {"dense":[], "jit":[], "csr":[]}
    for r in range(5):
        res["dense"].append(timeit(lambda: dense(x)))
        C.set_use_csr_jit(True); res["jit"].append(timeit(lambda: sm(x)))
        C.set_use_csr_jit(False); res["csr"].append(timeit(lambda: sm(x)))
    print({k: "%.3f ms"%(np.median(v)*1e3) for k,v in res.items()}, "jit/csr %.2f"%(np.median(res['csr'])/np.median(res['jit'])))
import collections
spent = collections.defaultdict(float); stack=[]
mods = [(n, m) for n, m in sm.named_modules() if type(m).__name__ in ("SparseLinear","AutoSparseLinear")]
for n, m in sm.named_modules():
    pass
def pre(name):
    def f(mod, inp): stack.append(time.perf_counter())
    return f
def post(name):
    def f(mod, inp, out): spent[name] += time.perf_counter() - stack.pop()
    return f
for n, m in mods:
    m.register_forward_pre_hook(pre(n)); m.register_forward_hook(post(n))
print([ (n, type(m).__name__) for n,m in mods])
with torch.inference_mode():
    for mode in (True, False, True, False):
        C.set_use_csr_jit(mode); sm(x); spent.clear()
        for _ in range(10): sm(x)
        print(mode, {k: "%.3f"%(v/10*1e3) for k, v in spent.items()})
