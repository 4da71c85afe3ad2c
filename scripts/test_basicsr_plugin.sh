#!/usr/bin/env bash
# diffsr inside BasicSR: set up (idempotent) a virtual env of its own, .venv-basicsr, with BasicSR
# (basicsr-volta, the maintained wheel that imports with current torch), its torch/torchvision pair
# and diffsr (editable, no dependencies of its own), then run tests_basicsr/ there. BasicSR brings the
# GUI opencv-python and torchvision, which diffsr's own env must not have: hence the second env.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-basicsr
export PIP_CONSTRAINT="$PWD/constraints-basicsr.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
stamp="$venv/.diffsr-installed"
if [ ! -f "$stamp" ] || [ constraints-basicsr.txt -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
  "$venv/bin/python" -m pip install -q torch torchvision basicsr-volta pytest tqdm
  "$venv/bin/python" -m pip install -q --no-deps -e .
  touch "$stamp"
fi
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" "$venv/bin/python" -m pytest -q "$@" tests_basicsr
