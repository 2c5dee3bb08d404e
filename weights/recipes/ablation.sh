#!/bin/bash
# Region attention vs window-only on the real CT data (issue 12): the ct-real recipes on a
# 500-step cosine schedule, seeds 0-2 of each, two runs side by side (one thread each;
# about 10 min per pair on an idle 2-core CPU). Compare the runs' best validation PSNR:
#   grep -h val_psnr runs/abl-*/metrics.jsonl
# NICE="nice -n 5" runs them at a lower priority (beside other work).
set -euo pipefail
cd "$(dirname "$0")/../.."
run() {  # recipe name seed
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ${NICE:-} .venv/bin/rat train --config weights/recipes/$1.toml \
    --iters 500 --val-every 250 --seed $3 -o runs/abl-$2-s$3 --overwrite
}
for s in 0 1 2; do
  run ct-real rat $s &
  run ct-real-window-only win $s &
  wait
done
