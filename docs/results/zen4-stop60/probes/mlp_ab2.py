"""sparsify(model) MLP / HF layer, one process, alternating values of an env var between rounds."""
import os, sys, time, copy
import numpy as np
import torch
from sparsegemm.bench import e2e
from sparsegemm.bench.workloads import Pattern
from sparsegemm.torch import sparsify
torch.set_num_threads(2)
var = sys.argv[1]; which = sys.argv[2]; sparsities = [float(v) for v in sys.argv[3].split(",")]; values = sys.argv[4].split(",")
def setv(v):
    os.environ.pop(var, None)
    if v != "-": os.environ[var] = v
for s in sparsities:
    model, x = (e2e._mlp if which == "mlp" else e2e._hf_bert_layer)()
    e2e.prune_model(model, s, Pattern())
    sp = sparsify(copy.deepcopy(model))
    res = {v: [] for v in values}
    with torch.inference_mode():
        ref = model(x)
        for v in values:
            setv(v)
            for _ in range(3): out = sp(x)
            torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
        for rnd in range(9):
            for v in values:
                setv(v)
                ts = []
                for _ in range(9):
                    a = time.perf_counter(); sp(x); ts.append(time.perf_counter() - a)
                res[v].append(np.median(ts) * 1e3)
    base = np.median(res[values[0]])
    print(f"{which} s={s}: " + "  ".join(f"{v} {np.median(t):.2f} ms ({base/np.median(t):.2f}x)" for v, t in res.items()), flush=True)
