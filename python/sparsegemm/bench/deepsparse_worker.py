"""DeepSparse as an end-to-end contender, run in its own interpreter.

DeepSparse 1.8 pins numpy 1.26 and so lives in its own venv (e.g.
``python -m venv /work/ds-venv && /work/ds-venv/bin/pip install torch==2.13.0
"deepsparse==1.8.0" onnx``). The parent (:func:`run`, in the benchmark's
process) saves the pruned dense model with ``torch.export`` and the input,
then runs this file as a script with that venv's python. The script imports
neither sparsegemm nor anything outside torch, numpy, onnx and deepsparse: it
exports the model to ONNX, compiles it with ``deepsparse.compile_model(path,
batch_size, num_cores)``, checks DeepSparse's output against torch's, and times
torch dense and DeepSparse interleaved with the suite's protocol (rounds of
blocks, a short sleep and a warm-up call before each block, medians of the
block means). Its figure is DeepSparse's speedup over torch dense measured in
that same process, so it compares with sparsegemm's speedup over torch dense
as a ratio, whatever the two processes' absolute speeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from typing import Any, Callable

SLEEP_S = 0.003  # before each block: lets the other runtime's idle threads stop spinning
TARGET_BLOCK_S = 0.01
MAX_CALLS = 50
TIMEOUT_S = 900


def run(python: str, model: Any, x: Any, threads: int, rounds: int,
        allowed_error: float) -> tuple[dict | None, str]:
    """(result, note): DeepSparse's figures for ``model(x)``, or None and why not.

    Runs in the benchmark's process; the work happens in ``python``. A DeepSparse
    output further than ``allowed_error`` (relative to max |y|) from torch's is
    reported, not compared.
    """
    import torch

    if not os.path.exists(python):
        return None, f"DeepSparse skipped: {python} does not exist"
    with tempfile.TemporaryDirectory(prefix="sparsegemm-ds-") as directory:
        model_path = os.path.join(directory, "model.pt2")
        input_path = os.path.join(directory, "x.pt")
        out_path = os.path.join(directory, "result.json")
        with torch.no_grad():
            torch.export.save(torch.export.export(model, (x,)), model_path)
        torch.save(x, input_path)
        command = [python, os.path.abspath(__file__), "--model", model_path, "--input", input_path,
                   "--threads", str(threads), "--rounds", str(rounds), "--out", out_path]
        try:
            finished = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, f"DeepSparse skipped: no result within {TIMEOUT_S} s"
        if finished.returncode != 0 or not os.path.exists(out_path):
            message = (finished.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"DeepSparse skipped: {message}"
        with open(out_path) as handle:
            result = json.load(handle)
    if not result["max_rel_error"] <= allowed_error:
        return None, (f"DeepSparse skipped: its output differs from torch's by "
                      f"{result['max_rel_error']:.3g} (allowed {allowed_error:.3g})")
    return result, f"DeepSparse {result['version']} via {python}"


def _median_block_times(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each contender, interleaved as the suite's harness does."""
    sizes = {}
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        sizes[name] = max(1, min(MAX_CALLS, int(TARGET_BLOCK_S / max(elapsed, 1e-9)) + 1))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(SLEEP_S)
            calls[name]()
            start = time.perf_counter()
            for _ in range(sizes[name]):
                calls[name]()
            samples[name].append((time.perf_counter() - start) / sizes[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="time DeepSparse against torch dense")
    parser.add_argument("--model", required=True, help="torch.export.save'd program")
    parser.add_argument("--input", required=True, help="torch.save'd input tensor")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", required=True, help="JSON result file")
    args = parser.parse_args(argv)

    import numpy as np

    import torch

    torch.set_num_threads(args.threads)
    model = torch.export.load(args.model).module()
    x = torch.load(args.input)
    with torch.no_grad():
        reference = model(x).numpy()
    onnx_path = os.path.splitext(args.model)[0] + ".onnx"
    setup_start = time.perf_counter()  # what a user waits once: export, compile, first run
    torch.onnx.export(model, (x,), onnx_path, input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False,
                      # an exported module has no train()
                      training=torch.onnx.TrainingMode.PRESERVE)
    import deepsparse

    engine = deepsparse.compile_model(onnx_path, batch_size=x.shape[0], num_cores=args.threads)
    x_numpy = np.ascontiguousarray(x.numpy())
    output = engine([x_numpy])[0]
    setup_s = time.perf_counter() - setup_start
    scale = max(float(np.abs(reference).max()), 1e-30)
    error = float(np.abs(output.astype(np.float64) - reference).max()) / scale

    def torch_dense() -> Any:
        with torch.no_grad():
            return model(x)

    times = _median_block_times({"torch_dense": torch_dense,
                                 "deepsparse": lambda: engine([x_numpy])}, args.rounds)
    with open(args.out, "w") as handle:
        json.dump({"torch_dense_s": times["torch_dense"], "deepsparse_s": times["deepsparse"],
                   "speedup": times["torch_dense"] / times["deepsparse"],
                   "max_rel_error": error, "version": deepsparse.__version__,
                   "setup_s": setup_s}, handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
