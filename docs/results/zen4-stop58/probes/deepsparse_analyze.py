# DeepSparse 1.8 per-layer times of the exported model (run with the DeepSparse venv python):
#   /path/to/ds-venv/bin/python deepsparse_analyze.py 0.7
import sys, torch, numpy as np
sp = sys.argv[1]
model = torch.export.load(f"./minilm{sp}.pt2").module()
x = torch.load("./ids.pt")
path = f"./minilm{sp}.onnx"
torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE)
from deepsparse import model_debug_analysis
from deepsparse.debug_analysis import construct_layer_table, construct_layer_statistics
r = model_debug_analysis(path, [x.numpy()], batch_size=8, num_cores=2, num_iterations=20)
print(construct_layer_table(r))
print(construct_layer_statistics(r))
