"""Write the bundled example inputs from synthetic phantoms (deterministic).

    python examples/make_examples.py            # writes into examples/
    python examples/make_examples.py --out DIR

- ct_series/: a low-dose-looking abdominal CT DICOM series, 8 slices of 128x128,
  int16 with RescaleIntercept -1024, 2.7 mm pixels, 3 mm slices.
- pet.nii.gz: a low-count PET volume (Poisson noise), 64x64x16, 4.07 x 4.07 x 3.27 mm,
  origin (-130.2, -145.6, -60.0), activity in Bq/ml.
- slide.tif: see the marked section below (written by the whole-slide example).

Running it twice gives byte-identical files (fixed seeds, UIDs and dates).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ratcli.io import Domain, Image, atomic_output, write
from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom, pet_phantom, smooth_noise

__all__ = ["make_ct_series", "make_pet_nifti", "make_slide", "main"]

HERE = Path(__file__).resolve().parent


def make_ct_series(out_dir: Path, *, size: int = 128, slices: int = 8, seed: int = 0) -> Path:
    """Low-dose CT: phantom HU plus white (~25 HU) and correlated (~15 HU) noise.
    Returns the series folder `out_dir/ct_series`."""
    rng = np.random.default_rng(seed)
    clean = ct_phantom(size=size, slices=slices, seed=seed)
    noise = 25.0 * rng.standard_normal(clean.shape) + 15.0 * smooth_noise(
        clean.shape, sigma_px=1.2, rng=rng
    )
    noisy = (clean + noise).astype(np.float32)
    datasets = synthetic_series(
        noisy,
        modality="CT",
        spacing=(2.7, 2.7, 3.0),
        origin=(-172.8, -172.8, -60.0),
        series_number=2,
        series_description="ABD low dose 3.0 B30f",
        seed=seed,
    )
    folder = out_dir / "ct_series"
    with atomic_output(folder, overwrite=True, directory=True) as tmp:
        save_datasets(datasets, tmp)
    return folder


def make_pet_nifti(out_dir: Path, *, size: int = 64, slices: int = 16, seed: int = 0) -> Path:
    """Low-count PET: Poisson counts from the phantom, lightly smoothed as a
    reconstruction would, scaled to Bq/ml. Returns `out_dir/pet.nii.gz`."""
    rng = np.random.default_rng(seed)
    activity = pet_phantom(size=size, slices=slices, seed=seed)
    counts_per_unit = 3.0  # few counts per voxel: a low-count acquisition
    counts = rng.poisson(activity * counts_per_unit).astype(np.float32) / counts_per_unit
    # 3x3 in-plane box blur (edges replicated) stands in for the reconstruction filter.
    padded = np.pad(counts, ((0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = sum(
        padded[:, 1 + dy: 1 + dy + size, 1 + dx: 1 + dx + size]
        for dy in (-1, 0, 1) for dx in (-1, 0, 1)
    ) / 9.0
    image = Image(
        array=(blurred * 1000.0).astype(np.float32),  # kBq/ml -> Bq/ml
        spacing=(4.07, 4.07, 3.27),
        origin=(-130.2, -145.6, -60.0),
        domain=Domain.ACTIVITY,
        modality="PT",
    )
    return write(image, out_dir / "pet.nii.gz", overwrite=True)


# --- Slide example: examples/slide.tif ---------------------------------------------


def make_slide(out_dir: Path, *, height: int = 768, width: int = 1024, seed: int = 0) -> Path:
    """A small whole-slide image: H&E-like tissue (an irregular blob) on white glass,
    written as a pyramidal tiled BigTIFF (256 px JPEG tiles, 3 levels, 0.5 um/px) that
    OpenSlide opens as generic-tiff. Returns `out_dir/slide.tif`."""
    from ratcli.io.wsi import PyramidWriter, SlideWriterConfig, slide_tiles
    from ratcli.phantoms import he_tile

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Blob edge: an ellipse whose radius wobbles with a smooth noise field.
    wobble = 0.15 * smooth_noise((1, height, width), sigma_px=40.0, rng=rng)[0]
    r = ((yy - 0.45 * height) / (0.33 * height)) ** 2 + ((xx - 0.4 * width) / (0.3 * width)) ** 2
    tissue = r < 1.0 + wobble
    side = int(2 ** np.ceil(np.log2(max(height, width))))
    stain = he_tile(size=side, seed=seed)[:height, :width]
    glass = np.clip(243 + 2.0 * rng.standard_normal((height, width, 1)), 0, 255)
    rgb = np.where(tissue[..., None], stain, glass).astype(np.uint8)
    path = out_dir / "slide.tif"
    with atomic_output(path, overwrite=True) as tmp:
        config = SlideWriterConfig(tile_px=256, min_levels=3, quality=85)
        PyramidWriter(tmp, width=width, height=height, config=config, mpp=(0.5, 0.5),
                      description="rat example slide (synthetic H&E)"
                      ).write(slide_tiles(rgb, config.tile_px))
    return path


# --- end of slide example section -------------------------------------------------


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: examples/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return [make_ct_series(args.out), make_pet_nifti(args.out), make_slide(args.out)]


if __name__ == "__main__":
    for path in main():
        print(path)
