#!/bin/bash
# Model size and 2.5D context for rat-ct (issue 22, item 4): the ct-real recipe at
#   w16-2d    width 16, 2D (ct-real as shipped; 500 steps, as ablation.sh ct)
#   w16-2.5d  width 16, 2.5D: one neighbouring slice on each side (--context-slices 1)
#   w32-2d    width 32, 2D
# compared on validation at equal training time: each variant gets the step count whose
# time matches w16-2d's 500 steps (cosine schedule to that count, two validations).
#   bash weights/recipes/ct_size.sh time    # seconds per step of each variant, taking turns
#   bash weights/recipes/ct_size.sh train   # seeds 0-2 of each variant (SEEDS="3": others),
#                                           # two runs side by side
# `time` runs each variant alone for 30 steps (one thread), twice in turn, and prints the
# seconds per step of steps 10-30 and the step counts that match 500 w16-2d steps
# (STEPS_CTX, STEPS_W32 override the ones measured for the card, below). Compare the runs:
#   python weights/recipes/ablation_table.py runs/ct-size --variants w16-2d,w16-2.5d,w32-2d
# SKIP="w16-2d" leaves a variant out of `train` (the card reuses ablation.sh ct's
# classical runs, the same recipe, code and seeds, as w16-2d).
# NICE="nice -n 5" runs them at a lower priority (beside other work).
set -euo pipefail
cd "$(dirname "$0")/../.."
# measured with `time` (2026-12-08, beside a region-maps ablation): w16-2.5d 0.99x and
# w32-2d 1.56x w16-2d's seconds per step, so 500 (the difference is within the noise)
# and 320 steps
declare -A STEPS=([w16-2d]=500 [w16-2.5d]=${STEPS_CTX:-500} [w32-2d]=${STEPS_W32:-320})
declare -A OPTS=([w16-2d]="" [w16-2.5d]="--context-slices 1" [w32-2d]="--width 32")
out=runs/ct-size
train() {  # variant seed iters val_every out [options...]
  local variant=$1 seed=$2 iters=$3 every=$4 dir=$5; shift 5
  # shellcheck disable=SC2086  # OPTS holds several words
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ${NICE:-} .venv/bin/rat train \
    --config weights/recipes/ct-real.toml --iters "$iters" --val-every "$every" \
    --seed "$seed" ${OPTS[$variant]} "$@" -o "$dir" --overwrite > "$dir.log" 2>&1
}
mkdir -p $out
case ${1:-} in
  time)
    mkdir -p $out/time
    for round in 1 2; do
      for v in w16-2d w16-2.5d w32-2d; do
        # w16-2d to step 50: its loss there checks the reuse of ablation.sh ct's runs
        train "$v" 0 500 250 "$out/time/$v-r$round" --log-every 10 \
          --stop-at "$([[ $v == w16-2d ]] && echo 50 || echo 30)"
      done
    done
    .venv/bin/python - "$out/time" <<'EOF'
import json, sys
from pathlib import Path
per = {}
for run in sorted(Path(sys.argv[1]).glob("*-r*/metrics.jsonl")):
    log = {r["step"]: r["seconds"] for r in map(json.loads, run.read_text().splitlines())
           if "loss" in r}
    per.setdefault(run.parent.name.rsplit("-r", 1)[0], []).append((log[30] - log[10]) / 20)
    if 50 in log:
        loss = [r["loss"] for r in map(json.loads, run.read_text().splitlines())
                if r.get("step") == 50][0]
        print(f"{run.parent.name}: loss at step 50 {loss!r}")
base = min(per["w16-2d"])
for v, s in per.items():
    print(f"{v}: s/step {', '.join(f'{x:.3f}' for x in s)}; fastest / w16-2d "
          f"{min(s) / base:.2f}x; steps for 500 w16-2d steps: {round(500 * base / min(s))}")
EOF
    ;;
  train)
    for seed in ${SEEDS:-0 1 2}; do
      for v in w16-2d w16-2.5d w32-2d; do
        [[ " ${SKIP:-} " == *" $v "* ]] && continue
        while (($(jobs -rp | wc -l) >= 2)); do wait -n; done
        n=${STEPS[$v]}
        train "$v" "$seed" "$n" $(((n + 1) / 2)) "$out/$v-s$seed" &
      done
    done
    wait
    ;;
  *) echo "usage: $0 time|train" >&2; exit 2 ;;
esac
