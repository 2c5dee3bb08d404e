"""How the PET activity guard's scales were chosen, on data that is not the test set.

New lesion realisations (the test's distribution: 4-10 mm spheres at 3-6x the local
activity, 6 mm FWHM PSF, `prepare_real._insert_lesions`, other seeds) are inserted into
the TRAINING and VALIDATION slabs of the real PET, thinned to 1/4 and 1/10 of the counts,
and restored by the raw network once (cached in CACHE). Each guard variant is then
applied to the cached outputs, and the hot spots of `ratcli.training.activity` are
measured against the lesioned target:

    python weights/recipes/pet_guard_design.py ../shared/data runs/scratch/petdesign \
        --weights weights/rat-pet.pt [--train 4 --val 3]

Prints per variant: mean PSNR per slice (Bq/ml, data range = target max - min), the
spot mean change, the share of spots within 10 %, how many spots the variant loses
that the input itself keeps within 10 % (all / >= 60 voxels), and the error std in a
shell 1-3 voxels outside the hottest region as a share of the input's (noise put back
around a hot organ shows there).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ratcli.inference.guards import activity_guard
from ratcli.training.activity import find_hot_spots
from ratcli.training.metrics import psnr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_real import (  # noqa: E402
    PET_DOSES,
    PET_FILE,
    PET_GAP,
    PET_LESIONS,
    PET_VAL,
    _insert_lesions,
    _take,
)

# name -> activity_guard keywords (None: no guard; "input": the noisy input)
VARIANTS: dict[str, object] = {
    "input": "input",
    "raw network": None,
    "sigma 1, d as is": {"sigmas": (1.0,), "rim_voxels": None},
    "sigma 1 + 2, d as is (shipped before)": {"rim_voxels": None},
    "sigma 1 + 2, median on cold regions > 300 voxels (shipped)": {"rim_voxels": 300},
    "sigma 1 + 2, median on cold regions > 100 voxels": {"rim_voxels": 100},
    "sigma 1 + 2, median on cold regions > 30 voxels": {"rim_voxels": 30},
}
LARGE = 60  # voxels: a large spot (the test set's missed one had 84)


def make_cache(shared: Path, cache: Path, weights: str, reps: dict[str, int]) -> None:
    import torch

    from ratcli.api import restore
    from ratcli.io import read
    from ratcli.training.degrade import LowCountPET

    torch.set_num_threads(1)
    full = read(shared / PET_FILE)
    nz = full.array.shape[0]
    test = np.arange(0, nz // 3)  # as prepare_pet: never used here
    val = np.arange(test[-1] + 1 + PET_GAP, test[-1] + 1 + PET_GAP + PET_VAL)
    train = np.arange(val[-1] + 1 + PET_GAP, nz)
    cache.mkdir(parents=True, exist_ok=True)
    for part, z in (("train", train), ("val", val)):
        count = round(PET_LESIONS * len(z) / len(test))
        for r in range(reps[part]):
            target, _ = _insert_lesions(_take(full, z), np.random.default_rng([9, len(z), r]),
                                        count)
            for d, (tag, dose) in enumerate(PET_DOSES.items()):
                dst = cache / f"{part}-{tag}-r{r}.npz"
                if dst.exists():
                    continue
                rng = np.random.default_rng([10, d, r, z[0]])
                low = np.stack([LowCountPET(dose=dose)(s, rng) for s in target.array])
                low = low.astype(np.float32)
                out = restore(target.derived(low), mode="denoise", task="pet",
                              weights=weights, device="cpu", raw=True).array
                np.savez_compressed(dst, low=low, full=target.array, out=out)
                print(f"cached {dst}", flush=True)


def psnr_per_slice(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean PSNR over the slices, data range = the target slice's max - min (as `rat
    evaluate` for PET); empty slices are skipped."""
    return float(np.mean([psnr(p, t, float(t.max() - t.min()))
                          for p, t in zip(pred, target, strict=True) if t.max() > t.min()]))


def hottest_shell(target: np.ndarray) -> np.ndarray:
    """Voxels 1-3 voxels outside the hottest region (connected, above half the maximum)."""
    from scipy import ndimage

    peak = np.unravel_index(np.argmax(target), target.shape)
    labels, _ = ndimage.label(target > 0.5 * target[peak])
    region = labels == labels[peak]
    return ndimage.binary_dilation(region, iterations=3) & ~region


def compare(cache: Path) -> None:
    rows = {name: {"psnr": [], "change": [], "shell": []} for name in VARIANTS}
    voxels: list[int] = []
    files = sorted(cache.glob("*.npz"))
    for f in files:
        a = np.load(f)
        low, target, out = (a[k].astype(np.float32) for k in ("low", "full", "out"))
        spots, _ = find_hot_spots(target)
        voxels += [s.voxels for s in spots]
        shell = hottest_shell(target)
        for name, options in VARIANTS.items():
            pred = low if options == "input" else out if options is None else \
                activity_guard(low, out, **options)
            rows[name]["psnr"].append(psnr_per_slice(pred, target))
            rows[name]["shell"].append(float(np.std((pred - target)[shell])))
            rows[name]["change"] += [100 * (pred[s.mask].mean() / target[s.mask].mean() - 1)
                                     for s in spots]
    large = np.array(voxels) >= LARGE
    kept = np.abs(np.array(rows["input"]["change"])) <= 10
    print(f"{len(files)} volumes, {len(voxels)} hot spots ({large.sum()} of >= {LARGE} "
          f"voxels); the input keeps {kept.sum()} within 10 % ({(kept & large).sum()} large)")
    print("| variant | PSNR (dB) | spot mean change (%) | within 10 % | lost (all) | "
          "lost (large) | shell error std / input's (max) |\n|---|---:|---:|---:|---:|---:|---:|")
    shell_input = np.array(rows["input"]["shell"])
    for name, r in rows.items():
        c = np.array(r["change"])
        lost = kept & (np.abs(c) > 10)
        shell = np.array(r["shell"]) / shell_input
        print(f"| {name} | {np.mean(r['psnr']):.2f} | {c.mean():+.1f} | "
              f"{np.mean(np.abs(c) <= 10):.3f} | {lost.sum()} | {(lost & large).sum()} | "
              f"{shell.mean():.2f} ({shell.max():.2f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shared", type=Path, help="the shared data folder (../shared/data)")
    ap.add_argument("cache", type=Path, help="folder for the cached network outputs")
    ap.add_argument("--weights", default="weights/rat-pet.pt")
    ap.add_argument("--train", type=int, default=4, help="realisations in the training slab")
    ap.add_argument("--val", type=int, default=3, help="realisations in the validation slab")
    args = ap.parse_args()
    make_cache(args.shared, args.cache, args.weights, {"train": args.train, "val": args.val})
    compare(args.cache)


if __name__ == "__main__":
    main()
