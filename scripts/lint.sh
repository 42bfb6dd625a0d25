#!/usr/bin/env bash
# The lint step of .ci/run and `tox -e lint`: style, types of the core, architecture contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
"$BIN/ruff" check src tests benchmarks scripts docs
"$BIN/ruff" format --check src tests benchmarks scripts docs
"$BIN/mypy"
"$BIN/lint-imports"
