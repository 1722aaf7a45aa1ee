#!/usr/bin/env bash
# Re-measure every figure of the README into docs/results/<figure>/, one command
# per figure (the same commands the README shows), then check the floors with
# benchmarks/verify_point.py. Run it on a quiet machine, from the repository root:
#
#   tools/readme_figures.sh              # every figure, then the floor check
#   tools/readme_figures.sh crossover    # one figure (see the names below)
#
# Each folder keeps results.json and report.md (committed); the CSV and, except
# for the crossover plot, the PNG are ignored by docs/results/.gitignore.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}python"
bench=(python -m sparsegemm.bench)
out=docs/results

script_figure() {  # script_figure NAME SCRIPT ARGS...: a benchmarks/ script's output, kept
    local name=$1 script=$2
    shift 2
    if [[ -z "${only:-}" || "$only" == "$name" ]]; then
        echo "== $name: python benchmarks/$script $*" >&2
        mkdir -p "$out/$name"
        { echo "\$ OMP_WAIT_POLICY=passive KMP_BLOCKTIME=1 python benchmarks/$script $*"
          OMP_WAIT_POLICY=passive KMP_BLOCKTIME=1 python "benchmarks/$script" "$@"
        } | tee "$out/$name/output.txt"
    fi
}

figure() {  # figure NAME ARGS...: run one README figure's command
    local name=$1
    shift
    if [[ -z "${only:-}" || "$only" == "$name" ]]; then
        echo "== $name: sparsegemm bench $* --out $out/$name" >&2
        "${bench[@]}" "$@" --out "$out/$name" --no-progress
    fi
}

only=${1:-}
# The crossover table and plot: the quick suite (add --processes 3 to repeat each
# point in fresh processes; the committed run is a single process).
figure crossover
# Best block shape at 90% and the BSR break-even at batch >= 16.
figure block-shapes --shape 4096x4096 --batch 1,64,256 --sparsity 0.3,0.4,0.9 \
    --pattern block:4x1,block:8x1,block:16x1,block:4x4 --formats sgemm_bsr --no-plot
# BERT FFN layers at batch 128, 90% blocks.
figure bert-ffn --shape 768x3072,3072x768 --batch 128 --sparsity 0.9 \
    --pattern block:8x1,block:16x1 --formats sgemm_auto,sgemm_bsr --no-plot
# End to end (MLP, BERT layer, ResNet bottleneck) at 90%, unstructured and 4x1 blocks,
# the median of 3 fresh processes (a whole-model figure moves by up to 25% between them).
figure e2e --e2e-only --sparsity 0.9 --pattern unstructured,block:4x1 --no-plot --processes 3
# Quantized sparse weights against torch's int8 and bf16 dense (batch 1 and 16, cold).
script_figure int8-floors int8_bitmap_floors.py --threads 2 --batches 1 16 \
    --sparsities 0.5 0.7 0.9 --repeats 5 --rounds 3
script_figure bf16-floors bf16_bitmap_floors.py --threads 2 --batches 1 16 \
    --sparsities 0 0.5 0.9 --repeats 5 --rounds 3
# The Llama-style MLP stack at 70%: int8 sparse against quantize_dynamic, batch 1.
script_figure decoder-int8 decoder_stack.py --threads 2 --sparsities 0.7 --formats bitmap \
    --no-auto --int8 --repeats 5 --rounds 3

if [[ -z "$only" || "$only" == floors ]]; then
    # The floors of issue #14, cold and warm: 7 fresh suite processes (floors-cold/,
    # floors-warm/), each followed by the separate harness (benchmarks/verify_point.py)
    # on every point in fresh processes of its own, so both sample the same minutes;
    # then each point's medians are compared. Its output is kept as evidence.
    echo "== floors: python benchmarks/floors_check.py --processes 7 --out $out" >&2
    python benchmarks/floors_check.py --processes 7 --out "$out" | tee "$out/floors-verify.txt"
fi
