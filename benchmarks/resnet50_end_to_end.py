"""A whole ResNet-50, as a CNN user would run it: ``sparsify(model)`` with no arguments
against the same pruned model left dense.

    PYTHONPATH=python python benchmarks/resnet50_end_to_end.py [--sparsity 0.9 0.7]

The network is torchvision's ResNet-50 v1.5 layout (stride on the 3x3 convolution),
written out here so that torchvision is not needed, with random weights and
BatchNorm statistics, in eval mode, batch 1 at 224x224. Every convolution but the
stem and the final Linear are magnitude-pruned per layer. The first forward of the
sparsified model is where each layer times its forms (``AutoSparseConv2d``,
``AutoSparseLinear``); its duration is printed. The outputs are checked against the
dense model, then both are timed in interleaved rounds (medians of single calls).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
from sparsegemm.torch import AutoSparseConv2d, sparsify
from torch import nn


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand, plus the shortcut."""

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out_channels = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet50() -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    channels = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for block in range(blocks):
            layers.append(Bottleneck(channels, width, stride if block == 0 else 1))
            channels = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    return nn.Sequential(*layers)


def pruned_resnet50(sparsity: float) -> nn.Sequential:
    """Random weights and BatchNorm statistics; every weight but the stem's pruned."""
    torch.manual_seed(0)
    model = resnet50()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
            if isinstance(module, nn.Conv2d) and module.in_channels == 3:
                continue  # the stem: 3 input channels, left dense as pruning recipes do
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                weight = module.weight
                cut = weight.abs().flatten().kthvalue(int(sparsity * weight.numel())).values
                weight[weight.abs() <= cut] = 0
    return model.eval()


def median_call_seconds(model: nn.Module, x: torch.Tensor, calls: int) -> float:
    """Median seconds of ``calls`` single calls of ``model(x)``, after one warm-up call."""
    model(x)
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        model(x)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.9, 0.7])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5, help="timed calls per round")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(1, 3, 224, 224)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ResNet-50, "
          f"batch 1, 224x224")
    for sparsity in args.sparsity:
        dense = pruned_resnet50(sparsity)
        sparse = sparsify(copy.deepcopy(dense))
        with torch.no_grad():
            start = time.perf_counter()
            out = sparse(x)
            deciding = time.perf_counter() - start
            expected = dense(x)
            torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
            convs = [layer.auto for layer in sparse.sparsegemm_report
                     if isinstance(layer.auto, AutoSparseConv2d)]
            kept_dense = sum(all(d.format == "dense" for d in conv.decisions.values())
                             for conv in convs)
            dense_s, sparse_s = [], []
            for _ in range(args.rounds):
                dense_s.append(median_call_seconds(dense, x, args.calls))
                sparse_s.append(median_call_seconds(sparse, x, args.calls))
        d, s = statistics.median(dense_s), statistics.median(sparse_s)
        rounds = " ".join(f"{a / b:.2f}" for a, b in zip(dense_s, sparse_s))
        print(f"sparsity {sparsity:.0%}: dense {d * 1e3:.1f} ms, sparsify(model) {s * 1e3:.1f} ms, "
              f"{d / s:.2f}x (per round: {rounds}); {len(convs) - kept_dense} of {len(convs)} "
              f"convolutions sparse; first forward (deciding) {deciding:.1f} s")


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
