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
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ] \
  || [ scripts/setup_env.sh -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q -e ".[$extras]"
  # LPIPS's linear heads (BSD, 54 KB); --no-deps: the wheel asks for torchvision, which diffsr
  # never imports (the heads are located without importing lpips).
  .venv/bin/python -m pip install -q --no-deps lpips==0.1.4
  touch "$stamp"
fi
