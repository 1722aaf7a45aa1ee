#!/usr/bin/env bash
# The linters CI runs (and .pre-commit-config.yaml runs locally), at the
# versions pinned in the `lint` extra: ruff (pyflakes, pycodestyle, isort,
# bugbear, pyupgrade, naming), mypy on the package, clang-format on csrc/ and
# codespell. Exits non-zero on the first linter that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check python tests benchmarks tools
mypy
git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.inl' | xargs clang-format --dry-run --Werror
codespell python csrc tests benchmarks tools README.md
echo "lint.sh: all linters passed"
