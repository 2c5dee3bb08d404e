#!/usr/bin/env bash
# Batch use of rat: list inputs with find, feed them on stdin, read one JSON line per
# input back with jq.
#
#   examples/batch.sh WEIGHTS [INPUT_DIR] [OUT_DIR]
#
# Every DICOM series folder and NIfTI volume under INPUT_DIR (default: this folder) is
# denoised by one `rat denoise -` call with WEIGHTS (a checkpoint path or manifest name;
# its task, e.g. ct, applies to all inputs). The JSON log is kept in OUT_DIR
# (default: INPUT_DIR/out); a line per input and a summary are printed. The exit
# status is rat's: 0 when every input succeeded, 1 when some failed, 2 for usage errors.
set -uo pipefail

weights=${1:?usage: examples/batch.sh WEIGHTS [INPUT_DIR] [OUT_DIR]}
in=${2:-$(dirname "$0")}
out=${3:-$in/out}
log=$out/rat-denoise.jsonl
mkdir -p "$out"

{
  # One line per series folder (the folder of any .dcm file), one per NIfTI file;
  # OUT_DIR is skipped so earlier results are never fed back in.
  find "$in" -path "$out" -prune -o -name '*.dcm' -printf '%h\n' | sort -u
  find "$in" -path "$out" -prune -o -name '*.nii.gz' -print
} | rat denoise - -o "$out" --weights "$weights" --json --quiet > "$log"
status=$?

jq -r '[.status, "\(.seconds)s", .input, "->", (.output // "-"), (.error // "")] | join(" ")' "$log"
jq -rs '"\(map(select(.status == "ok")) | length) ok, \(map(select(.status != "ok")) | length) failed"' "$log"
exit "$status"
