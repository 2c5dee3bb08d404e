#!/bin/bash
# Region maps ablation (issues 12 and 23): RAT trained on LiteMedSAM maps vs classical
# maps vs window-only (no region attention), same data, steps, batch and optimiser,
# seeds 0-2 of each, compared on validation.
#   bash weights/recipes/ablation.sh ct      # the ct-real recipe on a 500-step schedule
#   bash weights/recipes/ablation.sh sr-x2   # the sr-x2 recipe (500 steps, as shipped)
# Two runs side by side (one thread each). LiteMedSAM maps go to the region cache on
# the first run and are read back by the others. Compare the runs' best validation
# PSNR:  python weights/recipes/ablation_table.py runs/abl-<task>
# NICE="nice -n 5" runs them at a lower priority (beside other work).
set -euo pipefail
cd "$(dirname "$0")/../.."
task=${1:-ct}
case $task in
  ct) recipe=ct-real; extra=(--iters 500 --val-every 250) ;;
  sr-x2) recipe=sr-x2; extra=() ;;
  *) echo "usage: $0 ct|sr-x2" >&2; exit 2 ;;
esac
run() {  # variant seed options...
  local variant=$1 seed=$2; shift 2
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ${NICE:-} .venv/bin/rat train \
    --config weights/recipes/$recipe.toml "${extra[@]}" --seed "$seed" "$@" \
    -o runs/abl-$task/$variant-s$seed --overwrite > runs/abl-$task/$variant-s$seed.log 2>&1
}
mkdir -p runs/abl-$task
# two at a time; the first LiteMedSAM run fills the map cache before the next one starts
for job in litemedsam:0 classical:0 litemedsam:1 window-only:0 classical:1 litemedsam:2 \
           window-only:1 classical:2 window-only:2; do
  while (($(jobs -rp | wc -l) >= 2)); do wait -n; done
  variant=${job%:*} seed=${job#*:}
  case $variant in
    window-only) run "$variant" "$seed" --window-only & ;;
    *) run "$variant" "$seed" --regions "$variant" & ;;
  esac
done
wait
