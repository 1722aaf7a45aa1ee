#!/bin/bash
# Alternates processes of two trees (copies of python/sparsegemm built before and after
# 65c8102): the 64-row fixed-cost probe, then the cold batch-16 and batch-8 products at 90%.
#   bash docs/results/zen4-stop49/quantize_ab.sh /path/to/old /path/to/new > quantize_ab.txt
here=$(dirname "$0")
for round in 1 2 3 4; do
  for tree in "$1" "$2"; do
    echo "== round $round, $(basename "$tree")"
    PYTHONPATH=$tree python "$here/int8_fixed_cost.py"
    PYTHONPATH=$tree python "$here/../zen4-stop48/int8_small_batch.py" 0.9 16 2
    PYTHONPATH=$tree python "$here/../zen4-stop48/int8_small_batch.py" 0.9 8 2
  done
done
