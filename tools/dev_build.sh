#!/usr/bin/env bash
# Developer build: compile the extension into build/dev and drop it next to the
# Python sources, so `PYTHONPATH=python python ...` uses this tree without pip.
# Pass -DSPARSEGEMM_SANITIZE=ON (and a different build dir via BUILD_DIR) for ASan/UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build/dev}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" "$@" > /dev/null
cmake --build "$build_dir"
cp "$build_dir"/_core*.so python/sparsegemm/
