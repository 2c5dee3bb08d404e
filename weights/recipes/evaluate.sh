#!/usr/bin/env bash
# Evaluate the shipped checkpoints on held-out data (never used in training or tuning):
#   bash weights/recipes/evaluate.sh            # after train.sh (needs runs/data)
# Reports (metrics.csv, summary.csv, report.json, figure.png) go to runs/eval/<set>/;
# weights/recipes/tables.py turns them into the model-card tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
RAT=${RAT:-.venv/bin/rat}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
ev() { "$RAT" evaluate --overwrite --device cpu --figures 2 "$@"; }
# CT: pydicom-data slices, quarter dose simulated with --sim-seed 99 (the default).
ev --task ct --data runs/data/heldout/ct --out runs/eval/ct \
   --weights weights/rat-ct.pt --weights weights/rat-ct-window-only.pt ${CT_FP32:+--weights "$CT_FP32"}
# PET: held-out slab and subjects, paired, at 1/4 and 1/12 dose.
ev --task pet --data runs/data/pet/heldout-d4 --out runs/eval/pet-d4 --weights weights/rat-pet.pt
ev --task pet --data runs/data/pet/heldout-d12 --out runs/eval/pet-d12 --weights weights/rat-pet.pt
# Pathology SR: stardist's H&E image, anti-aliased bicubic downsampling.
ev --task sr-x2 --data runs/data/heldout/he --out runs/eval/sr-x2 --weights weights/rat-sr-x2.pt
ev --task sr-x4 --data runs/data/heldout/he --out runs/eval/sr-x4 --weights weights/rat-sr-x4.pt
