#!/usr/bin/env bash
# Build the extension with AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake option SPARSEGEMM_SANITIZE) into its own build dir, and run the CSR,
# BSR, conv, bitmap, int8 bitmap and attention kernel, pattern-only, API, bad-input and fuzz tests
# against it. The sanitized _core*.so is placed in a copy of the Python
# package in a temporary directory, so the normal build in python/sparsegemm/
# (or an installed wheel) is left alone.
# Exits non-zero on any sanitizer finding (ASan aborts; UBSan halts on error).
# Torch is excluded: it is not built with ASan and loads its own OpenMP.
#
# Usage: tools/sanitize.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
build_dir=${SANITIZE_BUILD_DIR:-build/sanitize}

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARSEGEMM_SANITIZE=ON \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" > /dev/null
cmake --build "$build_dir"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r python/sparsegemm "$work/sparsegemm"
rm -f "$work"/sparsegemm/_core*.so
cp "$build_dir"/_core*.so "$work/sparsegemm/"
# Only the sanitizer-supported tests; they are copied too, so nothing imports
# the unsanitized package by accident.
mkdir "$work/tests"
cp pyproject.toml "$work/"  # pytest settings: markers, filterwarnings = error
cp tests/conftest.py tests/test_csr_kernels.py tests/test_api.py tests/test_formats.py \
  tests/test_bsr_kernels.py tests/test_bsr_format.py tests/test_conv_kernels.py \
  tests/test_bad_input.py tests/test_fuzz.py tests/test_fuzz_bsr_conv.py tests/test_fuzz_bitmap.py \
  tests/test_bitmap_kernels.py tests/test_bitmap_format.py tests/test_bitmap_bf16.py \
  tests/test_int8_bitmap.py tests/test_pattern_only.py tests/test_attention.py \
  tests/test_layer_norm.py tests/test_csr_bsr_bf16.py tests/test_feed_forward.py \
  tests/test_activation_epilogue.py "$work/tests/"

ldd "$work"/sparsegemm/_core*.so | grep libasan > /dev/null ||
  { echo "sanitize.sh: $build_dir/_core*.so is not an ASan build" >&2; exit 1; }

cd "$work"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
# detect_leaks=0: CPython leaks by design at exit. allocator_may_return_null=1:
# the huge-request tests expect MemoryError, not an ASan abort.
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:detect_odr_violation=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONPATH="$work"
# The tests must import the sanitized copy, whatever else is installed.
python -c 'import sys, sparsegemm._core as c; assert c.__file__.startswith(sys.argv[1]), c.__file__' \
  "$work"
# --capture=sys: sanitizer reports go to fd 2, which pytest's default fd capture
# would swallow when the process aborts.
python -m pytest -q -p no:cacheprovider --capture=sys tests "$@"
echo "sanitize.sh: no sanitizer findings"
