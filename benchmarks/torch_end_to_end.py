"""End-to-end benchmarks of sparsegemm.torch against the same models run dense.

    PYTHONPATH=python python benchmarks/torch_end_to_end.py [mlp|bert|resnet ...] [--threads N]
        [--repeats N] [--pattern block:4x1] [--formats auto,csr] [--report]

A thin wrapper over the benchmark CLI's end-to-end suite
(:mod:`sparsegemm.bench.e2e`, also run by ``python -m sparsegemm.bench bench
--e2e-only``): the same models (MLP 1024-4096-4096-4096-1024 at batch 64, a
BERT-base encoder layer at sequence 128, a ResNet-50 bottleneck at 56x56), the
same magnitude pruning to 90% (unstructured, or whole blocks with
``--pattern block:RxC``), ``sparsify`` per format, an output check against the
dense pruned model, and the harness's interleaved medians. Per model it prints
the dense and sparse times, the speedup, the floor from the project brief
(MLP >= 3x, BERT layer >= 2x, ResNet bottleneck >= 1.5x) and whether the
outputs matched. On a shared or loaded machine the numbers are indicative.
"""

from __future__ import annotations

import argparse
import sys

import sparsegemm
from sparsegemm.bench.e2e import MODELS_BY_KEY, e2e_table, run_e2e
from sparsegemm.bench.environment import reexec_with_spin_env
from sparsegemm.bench.harness import HarnessSettings
from sparsegemm.bench.workloads import parse_pattern

SPARSITY = 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"any of {', '.join(MODELS_BY_KEY)} (default: all)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and sparsegemm threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=15,
                        help="interleaved timing rounds per contender (medians are compared)")
    parser.add_argument("--pattern", default="unstructured",
                        help="'unstructured' (default) or 'block:RxC', e.g. block:4x1")
    parser.add_argument("--formats", default=None,
                        help="comma-separated sparsify formats (default: auto,csr, plus bsr "
                             "with a block pattern)")
    parser.add_argument("--report", action="store_true",
                        help="also print sparsify's per-layer report for each row")
    args = parser.parse_args(argv)
    unknown = [name for name in args.models if name not in MODELS_BY_KEY]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS_BY_KEY)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        pattern = parse_pattern(args.pattern)
    except ValueError as error:
        parser.error(str(error))
    import torch

    threads = args.threads if args.threads is not None else torch.get_num_threads()
    sparsegemm.set_num_threads(threads)
    formats = tuple(f.strip() for f in args.formats.split(",")) if args.formats else None
    models = tuple(MODELS_BY_KEY[name] for name in args.models or MODELS_BY_KEY)

    sparsegemm.show_config()
    print(f"torch {torch.__version__}, {threads} threads; {SPARSITY:.0%} sparsity, "
          f"pattern {pattern.name}")
    rows, notes = run_e2e((SPARSITY,), pattern, threads, HarnessSettings(rounds=args.repeats),
                          models=models, formats=formats)
    for note in notes:
        print(note)
    if not rows:
        return 1
    print(e2e_table(rows))
    if args.report:
        for row in rows:
            if row.get("report"):
                print(f"\n== {row['model']}, format {row['format']}\n{row['report']}")
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    # Thread pools read their spin settings when they load: re-run once with them set,
    # as the benchmark CLI does.
    reexec_with_spin_env([sys.executable, *sys.argv])
    sys.exit(main())
