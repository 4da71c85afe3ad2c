#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite plus lint. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh demo,test
.venv/bin/ruff check diffsr scripts tests tests_basicsr
.venv/bin/ruff format --check diffsr scripts tests tests_basicsr
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # idle OpenMP threads sleep: much faster on busy cores
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" .venv/bin/python -m pytest -q "$@" tests
# diffsr inside BasicSR, in a virtual env of its own (BasicSR needs torchvision)
bash scripts/test_basicsr_plugin.sh
