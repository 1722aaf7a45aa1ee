"""End-to-end benchmarks of sparsegemm.torch against the same models run dense.

    PYTHONPATH=python python benchmarks/torch_end_to_end.py [mlp|bert|resnet ...] [--repeats 30]
        [--threads N]

Each model is pruned to 90% unstructured sparsity (magnitude, per layer, with
torch.nn.utils.prune), converted with sparsify(), checked against the dense
masked model, then timed: dense and sparse blocks are interleaved, each block
after one warm-up call, and the medians of all blocks are compared. Floors
from the project brief: MLP >= 3x, BERT-base encoder layer >= 2x, ResNet
bottleneck >= 1.5x. On a shared or loaded machine the numbers are indicative;
``--threads 1`` times with ``time.thread_time`` (this thread's CPU time), which
other processes' load disturbs far less than wall time.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

os.environ.setdefault("KMP_BLOCKTIME", "1")  # short pool spin between contenders
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # libgomp: short spin, no wake-up per call

import sparsegemm
import torch
from sparsegemm.torch import sparsify
from torch import nn
from torch.nn.utils import prune as torch_prune

SPARSITY = 0.9


def prune_all(model: nn.Module) -> nn.Module:
    """Magnitude-prune every Linear/Conv2d weight and MHA in-projection to SPARSITY."""
    for module in list(model.modules()):
        names = []
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            names.append("weight")
        if isinstance(module, nn.MultiheadAttention):
            names.append("in_proj_weight")
        for name in names:
            torch_prune.l1_unstructured(module, name, amount=SPARSITY)
            torch_prune.remove(module, name)
    return model


def mlp() -> tuple[nn.Module, torch.Tensor, float]:
    sizes = [1024, 4096, 4096, 4096, 1024]
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]), torch.randn(64, 1024), 3.0


def bert() -> tuple[nn.Module, torch.Tensor, float]:
    layer = nn.TransformerEncoderLayer(768, 12, 3072, batch_first=True)
    return layer, torch.randn(1, 128, 768), 2.0


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck at 256 channels (1x1 -> 3x3 -> 1x1, identity shortcut)."""

    def __init__(self, channels: int = 256, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + x)


def resnet() -> tuple[nn.Module, torch.Tensor, float]:
    return Bottleneck(), torch.randn(1, 256, 56, 56), 1.5


MODELS = {"mlp": mlp, "bert": bert, "resnet": resnet}


def time_block(model: nn.Module, x: torch.Tensor, calls: int, clock=time.perf_counter) -> float:
    model(x)  # warm-up
    start = clock()
    for _ in range(calls):
        model(x)
    return (clock() - start) / calls


def run(name: str, repeats: int, calls: int, clock=time.perf_counter) -> None:
    torch.manual_seed(0)
    dense, x, floor = MODELS[name]()
    dense = prune_all(dense).eval()
    sparse = sparsify(copy.deepcopy(dense), min_sparsity=0.85).eval()
    print(f"\n== {name}: {len(sparse.sparsegemm_report.converted)} layers converted")
    print(sparse.sparsegemm_report)
    with torch.inference_mode():
        expected, got = dense(x), sparse(x)
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)
        dense_times, sparse_times = [], []
        for _ in range(repeats):
            dense_times.append(time_block(dense, x, calls, clock))
            time.sleep(0.005)
            sparse_times.append(time_block(sparse, x, calls, clock))
            time.sleep(0.005)
    d, s = statistics.median(dense_times), statistics.median(sparse_times)
    verdict = "meets" if d / s >= floor else "BELOW"
    print(f"dense {d * 1e3:8.3f} ms   sparse {s * 1e3:8.3f} ms   speedup {d / s:5.2f}x "
          f"({verdict} the {floor}x floor; medians of {repeats} interleaved blocks of {calls}, "
          f"{clock.__name__})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"any of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and sparsegemm threads (default: torch's); 1 times with "
                             "time.thread_time")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        sparsegemm.set_num_threads(args.threads)
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {list(MODELS)}")
    sparsegemm.show_config()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"torch BLAS: {torch.backends.mkl.is_available() and 'MKL' or 'other'}")
    for name in args.models or list(MODELS):
        run(name, args.repeats, args.calls, clock)


if __name__ == "__main__":
    main()
