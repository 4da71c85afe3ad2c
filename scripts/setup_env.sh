#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with diffsr installed (editable) and the
# extras named in $1 (default: demo,test). torch is pinned by constraints.txt to the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-demo,test}"
export PIP_CONSTRAINT="$PWD/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=".venv/.diffsr-installed-$extras"
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi
