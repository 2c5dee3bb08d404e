"""Write the real examples, ct_series/, pet.nii.gz and he_tissue.tif, from public scans
(deterministic).

    python examples/make_real_examples.py SHARED_DATA_DIR            # writes into examples/
    python examples/make_real_examples.py SHARED_DATA_DIR --out DIR

SHARED_DATA_DIR is the project's shared/data folder (NIfTI conversions of public scans;
its README.md says how they were made). Sources:
- CT: TCIA Lung-PET-CT-Dx, subject A0002, chest CT (CC BY), via plotly/dash-vtk,
  demos/data/ct_lung -> ct/lung-pet-ct-dx-a0002-chest.nii.gz.
- PET: TCIA QIN-HEADNECK-01-0024, whole-body FDG PET in Bq/ml (CC BY), via FNNDSC/data,
  dicom/rsna_2/PET (commit d2960f2) -> pet/qin-headneck-01-0024-pet.nii.gz.
- H&E: a crop of OpenSlide's OS-1 test slide (Hamamatsu, 0.227 um/px; OpenSlide test
  data, "free to use and distribute"), via petebankhead/2022-qupath-cell-detection,
  images/OS-1-detail.ome.tif (commit 4632a17) -> he/openslide-os1-he-hamamatsu-0.227um.png.

Outputs (both from the held-out test parts of weights/recipes/prepare_real.py, never
trained on; the low-dose inputs are simulated with its simulators):
- ct_series/: slices 13-15 (heart, hila, a right lower lobe mass) at 1/4 dose, ramp
  filter (`LowDoseCT`), full 512x512 field of view, the scan's spacing and origin;
  an int16 DICOM CT series (RescaleIntercept -1024).
- pet.nii.gz: z 58-81, y 24-119, x 16-111 (24 x 96 x 96, pelvis with the bladder) at
  1/4 of the counts (`LowCountPET` on the whole scan at once, then cropped), float32
  Bq/ml, the scan's spacing, origin moved to the first kept voxel.
- ct_reference.nii.gz: full-dose HU of a 128 x 128 crop (y 160-287, x 96-223) of slice 14,
  the clean reference the shipped-weights test degrades and restores.
- he_tissue.tif: the whole 1100 x 1100 H&E crop at half resolution (anti-aliased bicubic,
  the SR models' training degradation `BicubicDown`): 550 x 550 at 0.454 um/px, about a
  20x scan, as a pyramidal JPEG BigTIFF like a slide. No shipped model saw this slide.

The source files are checked by SHA-256, and every seed, UID and date is fixed, so a
rerun writes the same pixels and UIDs.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from ratcli.io import Domain, Image, atomic_output, read, write
from ratcli.io.wsi import PyramidWriter, slide_tiles
from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.training.degrade import BicubicDown, LowCountPET, LowDoseCT

__all__ = ["make_real_ct", "make_real_pet", "make_real_he", "crop", "main"]

HERE = Path(__file__).resolve().parent
CT_FILE = "ct/lung-pet-ct-dx-a0002-chest.nii.gz"
PET_FILE = "pet/qin-headneck-01-0024-pet.nii.gz"
HE_FILE = "he/openslide-os1-he-hamamatsu-0.227um.png"
SHA256 = {
    CT_FILE: "9b79d805d145d5b4714f4dd68632a39156c2ac55b4ae67d9cc7e9f66abf9732a",
    PET_FILE: "929f0f2dc893ad885fde9105ab5c498d2c7b20f316506a8ada091f381e145607",
    HE_FILE: "7061f97893e02bf745c5660d18d09d1eb455e68d0ebc7d0b74f95b72a339f6f7",
}
HE_MPP = 0.227  # um per pixel of the source scan
DOSE = 0.25
CT_FILTER = "ramp"
CT_Z = slice(13, 16)  # the test scan's slices through lungs, heart and hila
# Inside the PET test region (z 0-98, the lowest third); the bladder is at z ~64-80.
REF_CROP = (slice(160, 288), slice(96, 224))  # (y, x) of ct_reference.nii.gz
PET_CROP = (slice(58, 82), slice(24, 120), slice(16, 112))  # (z, y, x)
SEED = 2026  # also the DICOM UID seed: new UIDs, not the old phantom series'


def make_real_ct(shared: Path, out_dir: Path) -> Path:
    """Simulated 1/4-dose slices of the test CT as a DICOM series; returns the folder."""
    full = _read_checked(shared, CT_FILE)
    part = crop(full, CT_Z)
    sim = LowDoseCT(dose=DOSE, filter_name=CT_FILTER).for_image(full)
    low = np.stack([sim(s, np.random.default_rng([SEED, CT_Z.start + k]))
                    for k, s in enumerate(part.array)])
    datasets = synthetic_series(
        low, modality="CT", spacing=part.spacing, origin=part.origin, series_number=3,
        series_description="Simulated 1/4 dose from TCIA Lung-PET-CT-Dx A0002", seed=SEED)
    for ds in datasets:
        _describe_source(ds)
    folder = out_dir / "ct_series"
    with atomic_output(folder, overwrite=True, directory=True) as tmp:
        save_datasets(datasets, tmp)
    return folder


def make_ct_reference(shared: Path, out_dir: Path) -> Path:
    """The full-dose pixels of a 128 px crop of the middle example slice (lung, chest wall
    and mediastinum): a clean reference for checking a CT model (tests use it)."""
    full = _read_checked(shared, CT_FILE)
    part = crop(full, slice(CT_Z.start + 1, CT_Z.start + 2), *REF_CROP)
    return write(part, out_dir / "ct_reference.nii.gz", overwrite=True)


def make_real_pet(shared: Path, out_dir: Path) -> Path:
    """A 1/4-count crop of the test region of the PET (Bq/ml); returns the file."""
    full = _read_checked(shared, PET_FILE)
    # The whole scan is thinned at once: one count scale, as for one acquisition.
    # (prepare_real scales each slice to its own maximum, which in the bladder slices
    # leaves under one count per body voxel.) Then the box is cut out.
    low = LowCountPET(dose=DOSE)(full.array, np.random.default_rng(SEED))
    part = crop(full.derived(low), *PET_CROP)
    image = Image(part.array, spacing=part.spacing, origin=part.origin,
                  direction=part.direction, domain=Domain.ACTIVITY, modality="PT")
    return write(image, out_dir / "pet.nii.gz", overwrite=True)


def make_real_he(shared: Path, out_dir: Path) -> Path:
    """The H&E crop at half resolution as a pyramidal JPEG slide; returns the file."""
    full = _read_checked(shared, HE_FILE).array[0]  # (1101, 1101, 3) uint8
    even = full[: full.shape[0] // 2 * 2, : full.shape[1] // 2 * 2]
    half = BicubicDown(scale=2)(np.ascontiguousarray(even), np.random.default_rng(SEED))
    mpp = 2 * HE_MPP
    h, w = half.shape[:2]
    out = out_dir / "he_tissue.tif"
    with atomic_output(out, overwrite=True) as tmp:
        PyramidWriter(tmp, width=w, height=h, mpp=(mpp, mpp),
                      description="OpenSlide OS-1 (H&E, Hamamatsu) crop at half resolution; "
                                  "OpenSlide test data").write(slide_tiles(half, 256))
    return out


def crop(image: Image, z: slice, y: slice = slice(None), x: slice = slice(None)) -> Image:
    """The (z, y, x) box of `image` (unit steps) with the origin moved to its first voxel,
    so every kept voxel keeps its position in patient space."""
    start = [s.indices(n)[0] for s, n in zip((x, y, z), image.array.shape[::-1], strict=True)]
    d = np.asarray(image.direction, dtype=float).reshape(3, 3)
    shift = d @ (np.asarray(start) * np.asarray(image.spacing))
    return Image(np.ascontiguousarray(image.array[z, y, x]), spacing=image.spacing,
                 origin=tuple(float(v) for v in np.asarray(image.origin) + shift),
                 direction=image.direction, domain=image.domain, modality=image.modality)


def _read_checked(shared: Path, rel: str) -> Image:
    path = shared / rel
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256[rel]:
        raise SystemExit(f"{path}: not the expected file (sha256 {digest})")
    return read(path)


def _describe_source(ds) -> None:
    """Say where the pixels come from instead of synthetic_series' phantom labels."""
    ds.PatientName, ds.PatientID = "Lung_Dx-A0002", "Lung_Dx-A0002"  # the TCIA subject ID
    ds.StudyDescription = "TCIA Lung-PET-CT-Dx A0002 chest CT (rat example)"
    ds.Manufacturer, ds.ManufacturerModelName = "SIEMENS", "Sensation 10"
    ds.InstitutionName, ds.BodyPartExamined, ds.ConvolutionKernel = "", "CHEST", "B40f"
    for tag in ("KVP", "XRayTubeCurrent", "Exposure"):  # unknown for the simulated dose
        delattr(ds, tag)
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.DerivationDescription = (f"1/4 dose simulated (rat LowDoseCT, {CT_FILTER} FBP noise) "
                                "from TCIA Lung-PET-CT-Dx A0002, CC BY")


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", type=Path, help="the shared/data folder")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: examples/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return [make_real_ct(args.shared, args.out), make_real_pet(args.shared, args.out),
            make_ct_reference(args.shared, args.out), make_real_he(args.shared, args.out)]


if __name__ == "__main__":
    for path in main():
        print(path)
