"""One sparse k x k convolution layer: sparsegemm.conv2d vs F.unfold + CSR vs dense torch.

    PYTHONPATH=python python benchmarks/conv_layer.py [--threads 1] [--repeats 21]

Default: the 3x3 layer of a ResNet-50 bottleneck (64 -> 64 channels, 56 x 56,
batch 1, padding 1) at 90% unstructured sparsity, float32. Contenders:

* sparsegemm: ``sparsegemm.conv2d``, which runs panels through the CSR panel
  kernel (never the whole im2col matrix): shifted row panels (one input row
  per channel and kernel row) for stride 1 along rows where a weight column
  holds up to 16 entries, im2col panels elsewhere, and the direct sparse
  convolution kernel for stride 1 over outputs 33+ wide below density 0.025
  (drivers/conv_driver.cpp)
* unfold+csr: ``F.unfold`` (im2col, whole) then the CSR product, the path
  SparseConv2d took before either
* dense: ``torch.nn.functional.conv2d`` with the masked dense weight

Every contender's output is checked against dense first. Blocks of calls are
interleaved, each after one warm-up call; the medians of all blocks are
compared. With --threads 1 the time is ``time.thread_time`` (CPU time of this
thread, less disturbed by other load), otherwise wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KMP_BLOCKTIME", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import sparsegemm  # noqa: E402
import torch  # noqa: E402
from sparsegemm import _core  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sparsegemm.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter

    torch.manual_seed(0)
    c, k, pad, stride = args.channels, args.kernel, args.kernel // 2, args.stride
    weight = torch.randn(c, c, k, k)
    weight[torch.rand(weight.shape) < args.sparsity] = 0
    x = torch.randn(args.batch, c, args.size, args.size)
    matrix = sparsegemm.CSRMatrix.from_dense(weight.reshape(c, -1).numpy())
    x_np = x.numpy()

    out_size = (args.size + 2 * pad - k) // stride + 1

    def sparse():
        return sparsegemm.conv2d(x_np, matrix, k, padding=pad, stride=stride)

    def unfold_csr():
        columns = F.unfold(x, k, padding=pad, stride=stride).numpy()
        out = np.empty((args.batch, c, columns.shape[2]), dtype=np.float32)
        for image, result in zip(columns, out):
            _core.csr_matmul(matrix._handle, image, result, None, args.threads)
        return out.reshape(args.batch, c, out_size, out_size)

    def dense():
        return F.conv2d(x, weight, padding=pad, stride=stride).numpy()

    contenders = {"sparsegemm": sparse, "unfold+csr": unfold_csr, "dense": dense}
    expected = dense()
    for name, fn in contenders.items():
        np.testing.assert_allclose(fn(), expected, rtol=1e-3, atol=1e-3, err_msg=name)

    times: dict[str, list[float]] = {name: [] for name in contenders}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, fn in contenders.items():
                fn()
                start = clock()
                for _ in range(args.calls):
                    fn()
                times[name].append((clock() - start) / args.calls)
                time.sleep(0.003)
    sparsegemm.show_config()
    print(f"torch {torch.__version__}; layer {c}->{c} {k}x{k} stride {stride}, "
          f"{args.size}x{args.size}, batch {args.batch}, sparsity {args.sparsity}, "
          f"nnz {matrix.nnz}, threads {args.threads}, clock {clock.__name__}")
    dense_median = statistics.median(times["dense"])
    useful = 2 * matrix.nnz * out_size * out_size * args.batch
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:11s} {median * 1e3:8.3f} ms  "
              f"({useful / median / 1e9:6.1f} useful GFLOP/s)  "
              f"{dense_median / median:5.2f}x vs dense  [min {min(values) * 1e3:.3f} ms]")


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
