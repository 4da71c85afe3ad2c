#!/usr/bin/env bash
# README's main command: set up (idempotent), build the demo data if missing, train FSDGN on it
# without and with DiffLoss (embedded demo prior), then print the side-by-side table and write
# the comparison grid to experiments/demo_comparison/. Re-running continues or reuses runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh demo
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # idle OpenMP threads sleep instead of spinning
py=.venv/bin/python
prior=experiments/pretrained_models/demo_prior_64.pth
if [ ! -f "$prior" ]; then
  echo "error: $prior is missing; it ships with the repository (git checkout -- $prior), or rebuild it:" >&2
  echo "  $py scripts/train_prior.py -opt options/prior/demo_prior.yml && $py scripts/export_prior.py experiments/demo_prior/models/net_g_latest.pth $prior" >&2
  exit 1
fi
$py scripts/make_demo_data.py
for run in l2 diffloss; do
  $py diffsr/train.py -opt "options/demo/dehaze_demo_${run}.yml" --auto_resume
done
$py scripts/compare_demo.py \
  --run "L2 only=experiments/demo_dehaze_l2" \
  --run "L2 + DiffLoss=experiments/demo_dehaze_diffloss" \
  --lq datasets/demo_haze/val/hazy --gt datasets/demo_haze/val/clear \
  --out experiments/demo_comparison
