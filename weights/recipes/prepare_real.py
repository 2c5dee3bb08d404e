"""Prepare paired training / validation / test data from the real scans in shared/data.

    python weights/recipes/prepare_real.py SHARED_DATA_DIR runs/real [--workers 1]

Sources (public; see SHARED_DATA_DIR/README.md for the conversion to NIfTI):
- CT, LIDC-IDRI-0314 chest (TCIA, CC BY 3.0; via FNNDSC/data, dicom/andrei_abdomen/data),
  every 2nd slice of a 1 mm series: TRAIN.
- CT, ITKElastix examples/data/00 body CT (Apache-2.0 repository): TRAIN.
- CT, QIICR/dcmqi data/segmentations/ct-3slice (BSD-style): VALIDATION.
- CT, TCIA Lung-PET-CT-Dx A0002 chest (CC BY; via plotly/dash-vtk demos/data/ct_lung): TEST.
- PET, TCIA QIN-HEADNECK-01-0024 whole-body FDG in Bq/ml (CC BY; via FNNDSC/data,
  dicom/rsna_2/PET): lowest third of the slices TEST, a slab above it VALIDATION, the
  rest TRAIN, with GAP slices between the parts used nowhere.

Whole scans (CT) or whole body regions (PET) are kept apart: neighbouring slices are
near copies. CT inputs are simulated in the projection domain (`LowDoseCT`) at the
file's pixel size, each training slice at a dose drawn log-uniformly from 1/16..1/2 of
the full-dose photon count and one of three FBP filters; the test set is every
combination of dose {1/2, 1/4, 1/8, 1/16} and filter {ramp, shepp-logan, hann}. PET
inputs are Poisson thinning (`LowCountPET`) to 1/4 and 1/10 of the counts. Every draw
is seeded; `provenance.json` lists what each slice got.

Output layout (what `rat train --data` / `rat evaluate --data` read as paired data):
    OUT/ct/train/{low,full}/*.nii.gz, OUT/ct/val/..., OUT/ct/test/d4-ramp/{low,full}/...
    OUT/pet/train/..., OUT/pet/val/..., OUT/pet/test-d4/..., OUT/pet/test-d10/...,
    OUT/pet/train-lesions/..., OUT/pet/val-lesions/... (the slabs with inserted lesions)
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ratcli.io import Image, read, write
from ratcli.training.degrade import LowCountPET, LowDoseCT

CT_TRAIN = {"lidc": "ct/lidc-idri-0314-chest-2mm.nii.gz",
            "itkelastix": "ct/itkelastix-00-body.nii.gz"}
CT_VAL = {"dcmqi": "ct/dcmqi-ct-3slice.nii.gz"}
CT_TEST = {"lungdx": "ct/lung-pet-ct-dx-a0002-chest.nii.gz"}
PET_FILE = "pet/qin-headneck-01-0024-pet.nii.gz"
FILTERS = ("ramp", "shepp-logan", "hann")
TEST_DOSES = {"d2": 0.5, "d4": 0.25, "d8": 0.125, "d16": 0.0625}
PET_DOSES = {"d4": 0.25, "d10": 0.1}
DOSE_RANGE = (1 / 16, 1 / 2)
TRAIN_STEP = 4  # every 4th slice of a training scan (2 mm slices: 8 mm apart)
TRAIN_REALIZATIONS = 2
TEST_SLICES = 10  # evenly spaced slices of the test scan
PET_GAP = 8  # slices (27 mm) between PET parts, used nowhere
PET_VAL = 24  # slices in the PET validation slab
# The test region (legs, pelvis) has no focal uptake but the bladder: lesions are inserted
# into the test target (spheres of 3-6x the local activity, 4-10 mm radius, blurred by a
# 6 mm FWHM PSF) before thinning, so lesion-level quantification can be measured.
PET_LESIONS = 12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shared", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--only", choices=["ct", "pet"], default=None)
    args = ap.parse_args()
    record: dict = {}
    if args.only in (None, "pet"):
        record["pet"] = prepare_pet(args.shared, args.out / "pet")
    if args.only in (None, "ct"):
        record["ct"] = prepare_ct(args.shared, args.out / "ct", workers=args.workers)
    (args.out / f"provenance-{args.only or 'all'}.json").write_text(json.dumps(record, indent=1))


def prepare_ct(shared: Path, out: Path, *, workers: int) -> dict:
    jobs = []
    for r in range(TRAIN_REALIZATIONS):
        for i, (name, rel) in enumerate(CT_TRAIN.items()):
            jobs.append(("train", f"{name}-r{r}", shared / rel, slice(r, None, TRAIN_STEP),
                         None, [1, i, r]))
    for i, (name, rel) in enumerate(CT_VAL.items()):
        jobs.append(("val", name, shared / rel, slice(None), None, [2, i]))
    for i, (name, rel) in enumerate(CT_TEST.items()):
        for j, (tag, dose) in enumerate(TEST_DOSES.items()):
            for k, filt in enumerate(FILTERS):
                jobs.append((f"test/{tag}-{filt}", name, shared / rel, "even", (dose, filt),
                             [3, i, j, k]))
    with ProcessPoolExecutor(workers) as pool:
        done = list(pool.map(_ct_job, [(out, *j) for j in jobs]))
    return {f"{split}/{name}": slices for split, name, slices in done}


def _ct_job(job) -> tuple[str, str, list]:
    out, split, name, path, zsel, fixed, seed = job
    full = read(path)
    z = np.arange(full.array.shape[0])
    z = np.linspace(0, len(z) - 1, TEST_SLICES).round().astype(int) if zsel == "even" else z[zsel]
    target = _take(full, z)
    rng = np.random.default_rng(seed)
    lows, info = [], []
    for zi, s in zip(z, target.array, strict=True):
        if fixed is None:
            dose = float(np.exp(rng.uniform(*np.log(DOSE_RANGE))))
            filt = FILTERS[int(rng.integers(len(FILTERS)))]
        else:
            dose, filt = fixed
        sim = LowDoseCT(dose=dose, filter_name=filt).for_image(target)
        lows.append(sim(s, rng))
        info.append({"z": int(zi), "dose": round(dose, 5), "filter": filt})
    _write_pair(target, np.stack(lows), out / split, name)
    return split, name, info


def prepare_pet(shared: Path, out: Path) -> dict:
    full = read(shared / PET_FILE)
    nz = full.array.shape[0]
    # z index 0 is the most inferior slice (LPS, direction +z): the test set is the
    # lowest third, validation a slab above it, training the rest.
    test = np.arange(0, nz // 3)
    val = np.arange(test[-1] + 1 + PET_GAP, test[-1] + 1 + PET_GAP + PET_VAL)
    train = np.arange(val[-1] + 1 + PET_GAP, nz)
    record = {"test": [int(test[0]), int(test[-1])], "val": [int(val[0]), int(val[-1])],
              "train": [int(train[0]), int(train[-1])]}
    lesioned, record["lesions"] = _insert_lesions(_take(full, test), np.random.default_rng(5))
    for d, (tag, dose) in enumerate(PET_DOSES.items()):
        sim = LowCountPET(dose=dose)
        for part, z, reps in (("train", train, 4), ("val", val, 1), ("test", test, 1)):
            target = lesioned if part == "test" else _take(full, z)
            for r in range(reps):
                rng = np.random.default_rng([4, d, r, z[0]])
                low = np.stack([sim(s, rng) for s in target.array])
                folder = out / (f"test-{tag}" if part == "test" else part)
                _write_pair(target, low, folder, f"qin-0024-{tag}-r{r}")
    # train-lesions / val-lesions: the same slabs with lesions of their own (other seeds,
    # as many per slice as the test region has), for the fine-tuning run that teaches
    # the model to keep focal uptake (pet-real-lesions.toml)
    for part, z, reps in (("train", train, 4), ("val", val, 1)):
        count = round(PET_LESIONS * len(z) / len(test))
        for r in range(reps):
            target, _ = _insert_lesions(_take(full, z), np.random.default_rng([6, len(z), r]),
                                        count)
            for d, (tag, dose) in enumerate(PET_DOSES.items()):
                rng = np.random.default_rng([7, d, r, z[0]])
                low = np.stack([LowCountPET(dose=dose)(s, rng) for s in target.array])
                _write_pair(target, low, out / f"{part}-lesions", f"qin-0024-{tag}-r{r}")
    return record


def _insert_lesions(image: Image, rng: np.random.Generator, count: int = PET_LESIONS
                    ) -> tuple[Image, list[dict]]:
    """`count` hot spheres in soft tissue (local activity 0.5-2x the body median),
    at least 30 mm apart, PSF-blurred; returns the new Image and what was inserted."""
    from scipy.ndimage import gaussian_filter

    act = image.array.astype(np.float64)
    sx, sy, sz = image.spacing
    smooth = gaussian_filter(act, 2.0)
    body = act > 0.05 * np.percentile(act, 99.9)
    median = float(np.median(act[body]))
    ok = (smooth > 0.5 * median) & (smooth < 2.0 * median)
    ok[:3], ok[-3:] = False, False
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in act.shape), indexing="ij")
    lesion = np.zeros_like(act)
    placed: list[dict] = []
    candidates = np.argwhere(ok)
    for c in candidates[rng.permutation(len(candidates))]:
        if len(placed) == count:
            break
        mm = np.array([c[0] * sz, c[1] * sy, c[2] * sx])
        if any(np.linalg.norm(mm - np.array(p["mm"])) < 30.0 for p in placed):
            continue
        radius, ratio = float(rng.uniform(4.0, 10.0)), float(rng.uniform(3.0, 6.0))
        d2 = ((zz - c[0]) * sz) ** 2 + ((yy - c[1]) * sy) ** 2 + ((xx - c[2]) * sx) ** 2
        lesion[d2 <= radius**2] = (ratio - 1.0) * smooth[tuple(c)]
        placed.append({"voxel": [int(v) for v in c], "mm": mm.tolist(),
                       "radius_mm": round(radius, 2), "ratio": round(ratio, 2)})
    fwhm_px = np.array([6.0 / sz, 6.0 / sy, 6.0 / sx])
    out = image.derived((act + gaussian_filter(lesion, fwhm_px / 2.3548)).astype(np.float32))
    return out, placed


def _take(image: Image, z: np.ndarray) -> Image:
    """Slices z of a volume, as a volume (origin moved to the first kept slice; the
    spacing along z is only nominal once slices are skipped)."""
    first = np.asarray(image.origin) + np.asarray(image.direction).reshape(3, 3)[:, 2] \
        * image.spacing[2] * int(z[0])
    out = image.derived(np.ascontiguousarray(image.array[z]).astype(np.float32))
    out.origin = tuple(float(v) for v in first)
    return out


def _write_pair(target: Image, low: np.ndarray, folder: Path, name: str) -> None:
    for part, arr in (("full", target.array), ("low", low)):
        img = target.derived(np.asarray(arr, np.float32))
        write(img, folder / part / f"{name}.nii.gz", overwrite=True)


if __name__ == "__main__":
    main()
