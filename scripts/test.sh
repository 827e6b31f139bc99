#!/usr/bin/env bash
# Install everything (venv, medledger and its test tools) and run the whole suite:
# ruff, mypy --strict, and pytest (unit, property, API fuzzing and real-process tests).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" dev

echo "== ruff"
.venv/bin/ruff check common crypto chain network health node tests scripts
.venv/bin/ruff format --check common crypto chain network health node tests scripts
echo "== mypy --strict"
.venv/bin/mypy --strict -p medledger
for target in tests/*.py tests/*/ scripts; do .venv/bin/mypy --strict "$target"; done  # one run per folder: each has its own conftest
echo "== pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=10 "$@"
