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
# Both option files pin num_threads: 1 (CPU results depend on the thread count, so the same
# command gives the same numbers on any machine); the two runs therefore train side by side.
pids=()
for run in l2 diffloss; do
  log="experiments/demo_train_${run}.out"
  echo "training demo_dehaze_${run} (log: $log)"
  $py diffsr/train.py -opt "options/demo/dehaze_demo_${run}.yml" --auto_resume > "$log" 2>&1 &
  pids+=($!)
done
status=0
for i in 0 1; do
  wait "${pids[$i]}" || status=$?
done
if [ "$status" -ne 0 ]; then
  echo "error: a demo run failed; the last lines of its log:" >&2
  tail -n 20 experiments/demo_train_*.out >&2
  exit "$status"
fi
$py scripts/compare_demo.py \
  --run "L2 only=experiments/demo_dehaze_l2" \
  --run "L2 + DiffLoss=experiments/demo_dehaze_diffloss" \
  --lq datasets/demo_haze/val/hazy --gt datasets/demo_haze/val/clear \
  --out experiments/demo_comparison
