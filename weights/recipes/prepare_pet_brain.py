"""Low-count test pairs of the unseen brain amyloid PET (issue 22), for real_tables.py.

    python weights/recipes/prepare_pet_brain.py SHARED_DATA_DIR runs/real [--counts 100]

Source: pet/centiloid-florbetapir-brain-a.nii.gz (florbetapir F-18, Bq/ml, 2 mm voxels;
see SHARED_DATA_DIR/README.md): a tracer, anatomy and scanner that rat-pet never saw.
Nothing of it is used in training or validation. Kept slices: those whose active area
(voxels >= 5 % of the volume's maximum) is at least 10 % of the largest slice's, so
the nearly empty slices above the vertex do not enter the PSNR means.

Inputs are Poisson thinning as prepare_real.py does it (`LowCountPET`) to 1/4 and 1/10
of the counts, but at `--counts` expected events per active voxel at full counts: 100
by default, which puts the brain's median activity at about 100 counts per voxel (the
level issue 22 measured at; the FDG scan's 30 is a noisier, whole-body setting). Seeded:
the same files every run. Output (what `rat evaluate --data` reads as paired data):
    OUT/pet-brain/test-d4/{low,full}/centiloid-brain-d4.nii.gz, OUT/pet-brain/test-d10/...
and OUT/pet-brain/provenance.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ratcli.io import read
from ratcli.training.degrade import LowCountPET

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_real import PET_DOSES, _take, _write_pair  # noqa: E402

BRAIN_FILE = "pet/centiloid-florbetapir-brain-a.nii.gz"
MIN_AREA = 0.10  # of the largest slice's active area


def prepare_pet_brain(shared: Path, out: Path, *, counts: float = 100.0) -> dict:
    full = read(shared / BRAIN_FILE)
    act = full.array.astype(np.float64)
    area = (act >= 0.05 * act.max()).sum(axis=(1, 2))
    z = np.flatnonzero(area >= MIN_AREA * area.max())
    target = _take(full, z)
    record = {"file": BRAIN_FILE, "slices": [int(z[0]), int(z[-1])], "n": len(z),
              "counts": counts, "doses": PET_DOSES}
    for d, (tag, dose) in enumerate(PET_DOSES.items()):
        sim = LowCountPET(dose=dose, counts=counts)
        rng = np.random.default_rng([8, d, int(counts)])
        low = np.stack([sim(s, rng) for s in target.array])
        _write_pair(target, low, out / f"test-{tag}", f"centiloid-brain-{tag}")
    (out / "provenance.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shared", type=Path)
    ap.add_argument("out", type=Path, help="writes OUT/pet-brain/")
    ap.add_argument("--counts", type=float, default=100.0,
                    help="full-count events per active voxel (LowCountPET.counts)")
    args = ap.parse_args()
    print(json.dumps(prepare_pet_brain(args.shared, args.out / "pet-brain",
                                       counts=args.counts)))


if __name__ == "__main__":
    main()
