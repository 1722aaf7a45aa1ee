import sys, time; sys.path.insert(0, "benchmarks")
import numpy as np, torch, sparsegemm
from decoder_stack import make_weights, prune_to, torch_stack, stack_forward, build_format, time_rounds, thread_limits
from sparsegemm.torch import sparsify
torch.set_num_threads(2); sparsegemm.set_num_threads(2)
L = int(sys.argv[1]) if len(sys.argv) > 1 else 4
blocks = make_weights(L, 4096, 11008, 0)
rng = np.random.default_rng(1)
prune_to(blocks, 0.0, 0.7, rng)
x = rng.standard_normal((1, 4096), dtype=np.float32); xt = torch.from_numpy(x)
bm = [{k: build_format("bitmap", w) for k, w in b.items()} for b in blocks]
runners = {"numpy-bitmap": lambda: stack_forward(bm, x, lambda h, w: sparsegemm.linear(h, w, num_threads=2))}
def torch_bitmap():
    h = xt
    for b in bm:
        g = torch.from_numpy(sparsegemm.linear(h.numpy(), b["gate"], num_threads=2))
        u = torch.from_numpy(sparsegemm.linear(h.numpy(), b["up"], num_threads=2))
        h = h + torch.from_numpy(sparsegemm.linear((torch.nn.functional.silu(g) * u).numpy(), b["down"], num_threads=2))
    return h
runners["torch-ops-bitmap"] = torch_bitmap
for name, opts in [("default", {}), ("nostack", dict(stack_shared_inputs=False)), ("told-bitmap", dict(format="bitmap", min_sparsity=0.0))]:
    m = torch_stack(blocks)
    with torch.no_grad():
        sparsify(m, **opts); m(xt)
    def f(m=m):
        with torch.no_grad():
            return m(xt)
    runners[name] = f
with thread_limits(2):
    samples = time_rounds(runners, 10, 4, ("numpy-bitmap",))
base = np.median(samples["numpy-bitmap"])
for k, v in samples.items():
    print(f"{k:18s} {np.median(v)*1e3:8.2f} ms  {base/np.median(v):.2f}x of numpy-bitmap")
