# Export the magnitude-pruned all-MiniLM-L6-v2 (8 x 128 tokens) for deepsparse_analyze.py:
#   PYTHONPATH=python python export_minilm.py 0.7   (writes ./minilm0.7.pt2 and ./ids.pt)
import sys, torch
from sparsegemm.bench.e2e import _minilm, prune_model
from sparsegemm.bench.workloads import Pattern
sp = float(sys.argv[1])
model, x = _minilm()
prune_model(model, sp, Pattern())
with torch.no_grad():
    torch.export.save(torch.export.export(model, (x,)), f"./minilm{sp}.pt2")
torch.save(x, "./ids.pt")
