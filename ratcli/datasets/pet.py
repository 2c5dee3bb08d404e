"""PET data: FDG-like brain activity from nilearn's MNI152 template, with paired full-
and low-dose count realisations.

    write_pet_data(Path("data/pet"))   # train/, val/, heldout-d4/, heldout-d12/

Each simulated subject starts from the MNI152 2009a grey- and white-matter probability
maps bundled in the nilearn wheel (1 mm grid):

1. activity = ratio * GM + WM (ratio ~ U(3.5, 4.5): FDG grey matter ~4x white matter),
   CSF ~0, other head tissue 0.15; a smooth multiplicative texture (+-10 %), a global
   scale ~ U(0.7, 1.3) x 3 kBq/ml, 0-4 spherical lesions (3-8 mm radius; hot x1.5-2.5
   or cold x0.3) and a random left-right flip;
2. scanner PSF: Gaussian blur, FWHM `psf_fwhm_mm` (4.5 mm);
3. 2 mm voxels (2x2x2 area average);
4. full dose: Poisson counts with the calibration of `LowCountPET` (mean `counts`
   events per active voxel), divided back to activity; low dose: binomial thinning of
   those very events to the dose fraction (what a shorter list-mode frame gives), scaled
   by 1 / dose. Low and full thus share their events, as in a real dose-reduction study.

Splits: training and validation subjects use every brain slice except the axial slab
`HELDOUT_SLAB_MM` (MNI z) widened by `GAP_MM` on each side; the held-out sets use only
that slab, from subjects (lesions, textures, noise) never seen in training. All subjects
share the one template anatomy: the held-out set tests unseen slices, lesions and noise,
not unseen brains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ratcli.datasets.common import package_file

__all__ = ["write_pet_data", "pet_subject", "HELDOUT_SLAB_MM", "DOSES"]

NILEARN = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
HELDOUT_SLAB_MM = (4.0, 20.0)  # MNI z range of the evaluation slab (basal ganglia level)
GAP_MM = 8.0  # slices this close to the slab are used nowhere
DOSES = {"d4": 0.25, "d12": 1.0 / 12.0}
VOXEL_MM = 2.0


def write_pet_data(
    out: Path,
    *,
    train_subjects: int = 6,
    val_subjects: int = 1,
    heldout_subjects: int = 2,
    counts: float = 30.0,
    psf_fwhm_mm: float = 4.5,
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Write paired `low/` + `full/` NIfTI folders (activity in kBq/ml, 2 mm voxels):
    `train/` and `val/` (both doses, slab excluded) and `heldout-d4/`, `heldout-d12/`
    (slab only). Subject i uses seed [seed, i]; the three splits never share a subject.
    Returns {split: full-dose paths}.
    """
    template = _template()
    splits = [("train", train_subjects), ("val", val_subjects), ("heldout", heldout_subjects)]
    written: dict[str, list[Path]] = {}
    index = 0
    for split, n in splits:
        for _ in range(n):
            rng = np.random.default_rng([seed, index])
            full_img, events, k = pet_subject(template, rng, counts=counts,
                                              psf_fwhm_mm=psf_fwhm_mm)
            for tag, dose in DOSES.items():
                low = rng.binomial(events, dose) / (dose * k)
                name = f"subject-{index:02d}-{tag}"
                for part, zsel in _slabs(full_img, heldout=split == "heldout"):
                    folder = out / (f"heldout-{tag}" if split == "heldout" else split)
                    stem = f"{name}-{part}.nii.gz"
                    _write_pair(full_img, low, zsel, folder, stem, written.setdefault(
                        folder.name, []))
            index += 1
    return written


def pet_subject(template: dict, rng: np.random.Generator, *, counts: float,
                psf_fwhm_mm: float):
    """One simulated full-dose acquisition.

    Returns (Image of full-dose activity (Z, Y, X) float32 kBq/ml on the 2 mm grid,
    events (Z, Y, X) int64 full-dose counts, k counts per kBq/ml).
    """
    from scipy.ndimage import gaussian_filter

    from ratcli.io import Domain, Image
    from ratcli.phantoms import smooth_noise
    from ratcli.training.degrade import LowCountPET

    gm, wm, head = template["gm"], template["wm"], template["head"]
    brain = np.clip(gm + wm, 0.0, 1.0)
    ratio = rng.uniform(3.5, 4.5)
    act = ratio * gm + wm + 0.15 * head * (1.0 - brain) * (template["t1"] > 0.5)
    act *= 1.0 + 0.1 * smooth_noise(act.shape, sigma_px=8.0, rng=rng)
    act = _lesions(act, brain, rng)
    if rng.integers(2):
        act = act[:, :, ::-1]  # left-right flip (X is the last axis)
    act *= 3.0 * rng.uniform(0.7, 1.3)  # white matter ~3 kBq/ml
    act = gaussian_filter(np.clip(act, 0.0, None), psf_fwhm_mm / 2.3548)
    act = _downsample2(act).astype(np.float64)
    k = LowCountPET(dose=1.0, counts=counts).counts_per_unit(act)
    events = rng.poisson(k * act)
    sx, sy, sz = template["spacing"]
    image = Image((events / k).astype(np.float32), spacing=(2 * sx, 2 * sy, 2 * sz),
                  origin=template["origin"], direction=template["direction"],
                  domain=Domain.ACTIVITY, modality="PT")
    return image, events, k


def _template() -> dict:
    """The MNI152 maps as (Z, Y, X) float arrays in [0, 1] plus the grid geometry."""
    import SimpleITK as sitk

    maps = {}
    for key in ("t1", "gm", "wm"):
        path = package_file("nilearn", NILEARN.format(key), install="pip install nilearn")
        img = sitk.ReadImage(str(path))
        maps[key] = sitk.GetArrayFromImage(img).astype(np.float32) / 255.0
    from scipy.ndimage import binary_closing, binary_fill_holes

    head = maps["t1"] > 0.1
    head = np.stack([binary_fill_holes(binary_closing(s, iterations=2)) for s in head])
    maps["head"] = head.astype(np.float32)
    maps["spacing"], maps["origin"] = img.GetSpacing(), img.GetOrigin()
    maps["direction"] = img.GetDirection()
    return maps


def _lesions(act: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0-4 spheres centred in the brain: hot (x1.5-2.5) or cold (x0.3)."""
    inside = np.argwhere(brain > 0.5)
    zz, yy, xx = np.ogrid[: act.shape[0], : act.shape[1], : act.shape[2]]
    for _ in range(int(rng.integers(0, 5))):
        cz, cy, cx = inside[int(rng.integers(len(inside)))]
        r = rng.uniform(3.0, 8.0)
        ball = (zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        factor = 0.3 if rng.random() < 0.25 else rng.uniform(1.5, 2.5)
        act = np.where(ball & (brain > 0.2), act * factor, act)
    return act


def _downsample2(a: np.ndarray) -> np.ndarray:
    Z, H, W = (s - s % 2 for s in a.shape)
    a = a[:Z, :H, :W]
    return a.reshape(Z // 2, 2, H // 2, 2, W // 2, 2).mean(axis=(1, 3, 5))


def _slabs(image, *, heldout: bool) -> list[tuple[str, np.ndarray]]:
    """[(part name, z indices)]: the held-out slab, or the brain slices below and above
    it (minus the gap). Brain slices: activity above 20 % of the volume's top somewhere."""
    Z = image.num_slices
    z_mm = image.origin[2] + np.arange(Z) * image.spacing[2]
    top = image.array.max()
    has_brain = image.array.reshape(Z, -1).max(axis=1) > 0.2 * top
    lo, hi = HELDOUT_SLAB_MM
    if heldout:
        return [("slab", np.flatnonzero(has_brain & (z_mm >= lo) & (z_mm < hi)))]
    below = np.flatnonzero(has_brain & (z_mm < lo - GAP_MM))
    above = np.flatnonzero(has_brain & (z_mm >= hi + GAP_MM))
    return [("inferior", below), ("superior", above)]


def _write_pair(full, low: np.ndarray, zsel: np.ndarray, folder: Path, stem: str,
                record: list[Path]) -> None:
    from dataclasses import replace

    from ratcli.io import write

    if zsel.size == 0:
        return
    z0 = int(zsel[0])
    origin = (full.origin[0], full.origin[1], full.origin[2] + z0 * full.spacing[2])
    zs = slice(z0, int(zsel[-1]) + 1)
    f = replace(full, array=full.array[zs], origin=origin)
    lo = replace(full, array=low[zs].astype(np.float32), origin=origin)
    record.append(write(f, folder / "full" / stem, overwrite=True))
    write(lo, folder / "low" / stem, overwrite=True)
