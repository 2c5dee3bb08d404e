"""CT training data that covers what users scan (issue 22, items 2-3): every CT scan in
shared/data, split by scan, with noise level, pixel size, slice thickness and FBP kernel
drawn per training slice.

    python weights/recipes/prepare_ct_wide.py SHARED_DATA_DIR runs/real [--workers 2]
        [--parts train,val,test]

Split (whole scans; public sources in SHARED_DATA_DIR/README.md and prepare_real.py):
- TRAIN: LIDC-IDRI-0314 chest (Philips), ITKElastix body (Philips), Lung-PET-CT-Dx A0002
  chest (Siemens Sensation 10, 8 mm slices).
- VALIDATION: the 3 dcmqi slices (GE LightSpeed Ultra), each at VAL_NOISE settings
  from nearly clean to very noisy.
- TEST: the InVesalius head (Siemens, 0.48 mm) and the Biograph mCT contrast abdomen
  (Siemens): the body part and the low-noise regime training lacks, and a non-chest scan.
  10 evenly spaced slices each, at each dose of TEST_DOSES and each filter, 1e6 photons
  per ray at full dose (the scanner's own pixel size).

Why these ranges (the head diagnosis in the rat-ct card): at the same dose a head lets
far more photons through than an adult body, so its noise is a fraction of a body's;
a model that saw only body noise levels misreads a head's fine low-contrast texture.
Training slices therefore draw
- the image noise std in the body log-uniform in NOISE_RANGE_HU (3-150 HU: a head or a
  child at full dose to an obese abdomen at a twentieth), the photons per ray that give
  it found with one calibration run per slice (std goes as 1 / sqrt(photons)): drawing
  the dose alone left heads far below any noise level training saw;
- the pixel size log-uniform in PIXEL_RANGE (the clean slice resampled, anti-aliased
  when shrinking, centre-cropped to at most 512 px) before noise insertion, so noise
  grain and anatomy scale vary independently;
- slice thickness: the mean of 1-3 neighbouring clean slices (partial volume as in
  thicker reconstructions);
- one of the ramp, Shepp-Logan and Hann filters.
Every draw is seeded; provenance-<parts>.json lists each slice's settings.

Status: a 500-step fine-tune of rat-ct on this data was worse on validation than the
same fine-tune on the old data (see "First short run on the wider CT data" in the
rat-ct card): the models also remove the full-dose target's own grain. The noise-aware
rat-ct-noise (ct-wide-noise-pair*.toml) is trained on it; `--parts test [--cells ...]`
writes the test matrix that ct_test_matrix.py scores.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from prepare_real import _take, _write_pair

from ratcli.io import read
from ratcli.training.degrade import LowDoseCT

TRAIN = {"lidc": ("ct/lidc-idri-0314-chest-2mm.nii.gz", 4),
         "itkelastix": ("ct/itkelastix-00-body.nii.gz", 4),
         "lungdx": ("ct/lung-pet-ct-dx-a0002-chest.nii.gz", 1)}  # name: (file, slice step)
REALIZATIONS = {"lidc": 2, "itkelastix": 2, "lungdx": 2}
VAL = {"dcmqi": "ct/dcmqi-ct-3slice.nii.gz"}
TEST = {"head": "ct/invesalius-0051-head.nii.gz",
        "abdomen": "ct/totalsegmentator-biograph-mct-abdomen.nii.gz"}
FILTERS = ("ramp", "shepp-logan", "hann")
NOISE_RANGE_HU = (3.0, 150.0)  # image noise std in the body, drawn log-uniform
CALIBRATION_PHOTONS = 1e6
PIXEL_RANGE = (0.3, 1.0)
MAX_THICK = 3
MAX_SIZE = 512
# validation: (photons at full dose, dose, filter) per dcmqi slice
VAL_NOISE = ((3e7, 0.5, "hann"), (1e7, 0.25, "ramp"), (1e6, 0.25, "shepp-logan"),
             (3e5, 0.25, "ramp"))  # body noise std about 3, 20, 52, 120 HU
TEST_DOSES = {"d2": 0.5, "d4": 0.25, "d10": 0.1, "d16": 0.0625}
TEST_SLICES = 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shared", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--parts", default="train,val")
    ap.add_argument("--cells", default="", help="test cells only, e.g. d4-ramp,d4-hann "
                    "(default: every dose x filter)")
    args = ap.parse_args()
    out = args.out / "ct-wide"
    parts = set(args.parts.split(","))
    jobs: list[tuple] = []
    if "train" in parts:
        for i, (name, (rel, step)) in enumerate(TRAIN.items()):
            for r in range(REALIZATIONS[name]):
                jobs.append(("train", f"{name}-r{r}", args.shared / rel,
                             ("train", step, r), [11, i, r]))
    if "val" in parts:
        for i, (name, rel) in enumerate(VAL.items()):
            for k, noise in enumerate(VAL_NOISE):
                jobs.append(("val", f"{name}-n{k}", args.shared / rel, ("fixed", noise),
                             [12, i, k]))
    if "test" in parts:
        for i, (name, rel) in enumerate(TEST.items()):
            for j, (tag, dose) in enumerate(TEST_DOSES.items()):
                for k, filt in enumerate(FILTERS):
                    if args.cells and f"{tag}-{filt}" not in args.cells.split(","):
                        continue
                    jobs.append((f"test/{tag}-{filt}", name, args.shared / rel,
                                 ("test", (1e6, dose, filt)), [13, i, j, k]))
    with ProcessPoolExecutor(args.workers) as pool:
        done = list(pool.map(_job, [(out, *j) for j in jobs]))
    record = {f"{split}/{name}": info for split, name, info in done}
    out.mkdir(parents=True, exist_ok=True)
    tag = "-".join(sorted(parts)) + (f"-{args.cells.replace(',', '+')}" if args.cells else "")
    (out / f"provenance-{tag}.json").write_text(json.dumps(record, indent=1))


def _job(job) -> tuple[str, str, list]:
    out, split, name, path, plan, seed = job
    full = read(path)
    vol = full.array.astype(np.float32)
    rng = np.random.default_rng(seed)
    px = float(full.spacing[0])
    if plan[0] == "train":
        _, step, r = plan
        z = np.arange(vol.shape[0])[r % step::step]
    elif plan[0] == "test":
        z = np.linspace(0, vol.shape[0] - 1, TEST_SLICES).round().astype(int)
    else:
        z = np.arange(vol.shape[0])
    targets, lows, info = [], [], []
    for zi in z:
        if plan[0] == "train":
            filt = FILTERS[int(rng.integers(len(FILTERS)))]
            thick = int(rng.integers(1, MAX_THICK + 1))
            new_px = float(np.exp(rng.uniform(*np.log(PIXEL_RANGE))))
        else:
            filt, thick, new_px = plan[1][2], 1, px
        lo = int(np.clip(zi - (thick - 1) // 2, 0, vol.shape[0] - thick))
        clean = resample(vol[lo:lo + thick].mean(axis=0), px / new_px)
        if plan[0] == "train":
            # the noise std is what is drawn; photons follow from one calibration run
            want = float(np.exp(rng.uniform(*np.log(NOISE_RANGE_HU))))
            probe = LowDoseCT(dose=1.0, photons=CALIBRATION_PHOTONS, filter_name=filt,
                              pixel_mm=new_px)(clean, rng)
            photons = CALIBRATION_PHOTONS * (body_std(probe - clean, clean) / want) ** 2
            dose = 1.0
        else:
            photons, dose = plan[1][0], plan[1][1]
        low = LowDoseCT(dose=dose, photons=photons, filter_name=filt, pixel_mm=new_px)(
            clean, rng)
        targets.append(clean)
        lows.append(low)
        info.append({"z": int(zi), "photons": round(photons), "dose": round(dose, 5),
                     "filter": filt, "thick_slices": thick, "pixel_mm": round(new_px, 4),
                     "noise_std_hu": round(body_std(low - clean, clean), 2),
                     "target_grain_hu": round(grain(clean), 2)})
    # slices of one volume may differ in size after resampling: one file per slice
    for zi, t, low, rec in zip(z, targets, lows, info, strict=True):
        sx = rec["pixel_mm"]
        img = replace(_take(full, np.array([zi])).derived(t[None]),
                      spacing=(sx, sx, float(full.spacing[2])))
        _write_pair(img, low[None], out / split, f"{name}-z{int(zi):03d}")
    return split, name, info


def body_std(noise: np.ndarray, clean: np.ndarray) -> float:
    """Std (HU) of `noise` inside the body (clean above -500 HU)."""
    body = clean > -500
    return float(np.std(noise[body])) if body.any() else float(np.std(noise))


def grain(clean: np.ndarray) -> float:
    """The target's own fine grain (HU): robust std of the 3x3-mean residual in soft
    tissue (-100..150 HU), where real full-dose scans still carry noise of their own."""
    from scipy.ndimage import uniform_filter

    soft = (clean > -100) & (clean < 150)
    if soft.sum() < 100:
        return float("nan")
    r = (clean - uniform_filter(clean, 3))[soft]
    return float(1.4826 * np.median(np.abs(r - np.median(r))) * 3 / np.sqrt(8))


def resample(slice2d: np.ndarray, scale: float) -> np.ndarray:
    """(H, W) HU resampled by `scale` (anti-aliased when shrinking), centre-cropped to at
    most MAX_SIZE px; float32."""
    from skimage.transform import rescale

    if abs(scale - 1.0) > 1e-3:
        slice2d = rescale(slice2d.astype(np.float64), scale, order=3, mode="edge",
                          anti_aliasing=scale < 1, preserve_range=True)
    h, w = slice2d.shape
    y, x = max(0, (h - MAX_SIZE) // 2), max(0, (w - MAX_SIZE) // 2)
    return np.ascontiguousarray(slice2d[y:y + MAX_SIZE, x:x + MAX_SIZE], dtype=np.float32)


if __name__ == "__main__":
    main()
