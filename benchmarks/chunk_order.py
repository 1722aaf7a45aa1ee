"""What chunk order buys the CSR panel kernel: the same product over values in
chunk order (``csr_linear_chunk_ordered``, what a torch module's inference path
and a CSRMatrix's own values use) against values in CSR order (the kernel then
prefetches each segment ahead), interleaved rounds in one process, medians.

The kernel runs in column chunks only where ``panel_chunk_columns`` is set for
the matrix; other points print as unchunked (both calls run the same kernel).

    PYTHONPATH=python python benchmarks/chunk_order.py --threads 2
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

import numpy as np

import sparsegemm as sg
from sparsegemm import CSRMatrix, _core

# (out_features, in_features, rows): BERT-base's FFN and attention projections at
# seq 128, the MLP's 4096-wide layers at batch 64, MiniLM's FFN at 1,024 rows.
SHAPES = [(768, 768, 128), (3072, 768, 128), (768, 3072, 128), (4096, 4096, 64),
          (1536, 384, 1024), (384, 1536, 1024)]


def seconds_per_call(fn, calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def time_point(rows_out: int, cols: int, batch: int, density: float, threads: int,
               rounds: int, calls: int, rng: np.random.Generator) -> tuple[int, float, float]:
    """(chunk columns, ms in CSR order, ms in chunk order) for one random weight."""
    dense = rng.standard_normal((rows_out, cols)).astype(np.float32)
    dense[rng.random((rows_out, cols)) > density] = 0
    weight = CSRMatrix.from_dense(dense)
    pattern = CSRMatrix.pattern(weight.indptr, weight.indices, weight.shape)
    values = np.array(weight.data)
    chunk_cols, ordered = pattern._handle.values_in_chunk_order(values)
    x = rng.standard_normal((batch, cols)).astype(np.float32)
    out = np.empty((batch, rows_out), np.float32)
    csr_order = functools.partial(_core.csr_linear, pattern._handle, x, out, None, threads,
                                  values)
    chunk_order = functools.partial(_core.csr_linear_chunk_ordered, pattern._handle, x, out,
                                    None, threads, values,
                                    values if ordered is None else ordered, chunk_cols)
    csr_order()
    expected = out.copy()
    chunk_order()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    samples: dict[str, list[float]] = {"csr": [], "chunk": []}
    for _ in range(rounds):
        samples["csr"].append(seconds_per_call(csr_order, calls))
        samples["chunk"].append(seconds_per_call(chunk_order, calls))
    return (chunk_cols, statistics.median(samples["csr"]) * 1e3,
            statistics.median(samples["chunk"]) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"sparsegemm {sg.__version__}, ISA {sg.get_isa()}, {args.threads} threads; "
          f"medians of {args.rounds} interleaved rounds of {args.calls} calls")
    print(f"{'shape':>18} {'rows':>5} {'density':>7} {'chunk':>5} {'CSR order':>10} "
          f"{'chunk order':>11} {'speedup':>7}")
    for rows_out, cols, batch in SHAPES:
        for density in args.densities:
            chunk_cols, csr_ms, chunk_ms = time_point(rows_out, cols, batch, density,
                                                      args.threads, args.rounds, args.calls, rng)
            width = str(chunk_cols) if chunk_cols else "-"
            print(f"{f'{rows_out}x{cols}':>18} {batch:>5} {density:>7.2f} {width:>5} "
                  f"{csr_ms:>8.2f}ms {chunk_ms:>9.2f}ms {csr_ms / chunk_ms:>6.2f}x")


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
