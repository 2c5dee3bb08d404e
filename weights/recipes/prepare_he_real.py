"""Wider pathology SR data (issue 22, item 7): the bundled training tiles plus the real
scanner images of ../shared/data/he/ from other labs, scanners and stains, one lab held out.

    python weights/recipes/prepare_he_real.py ../shared/data runs/real/he [--base runs/data/he]

Splits, by whole image (never a tile of one image on two sides):
- train: the bundled tiles (`python -m ratcli.datasets he`: CMU-1 H&E, scikit-image IHC)
  and, cut the same way (192 px, glass skipped, at most `--per-image` tiles spread evenly
  over each image): OpenSlide OS-1 H&E and the OS-2 Ki67 slide, both Hamamatsu 0.227 um/px,
  and OS-2 again from an Olympus scanner at 0.346 um/px (same slide: same side);
- val: the bundled validation tiles and the Kather CD31 IHC image (another lab and stain);
- test: the HEnorm H&E image (another lab; the unseen H&E of the issue), whole, looked at
  once per final model; the stardist `histo.jpg` of `ratcli.datasets heldout` stays the
  older held-out image.
Prints the tiles per split and source.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from ratcli.datasets.pathology import tissue_tiles, write_tile
from ratcli.io import read

TRAIN = ("openslide-os1-he-hamamatsu-0.227um", "openslide-os2-ki67-hamamatsu-0.227um",
         "openslide-os2-ki67-olympus-0.346um")
VAL = ("kather-cd31-ihc",)
TEST = ("henorm-example1-he",)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shared", type=Path, help="../shared/data")
    ap.add_argument("out", type=Path)
    ap.add_argument("--base", type=Path, default=Path("runs/data/he"),
                    help="the bundled tiles (python -m ratcli.datasets he DIR)")
    ap.add_argument("--tile", type=int, default=192)
    ap.add_argument("--per-image", type=int, default=40)
    args = ap.parse_args()
    he = args.shared / "he"
    for split in ("train", "val"):
        files = sorted((args.base / split).glob("*.png"))
        if not files:
            raise SystemExit(f"{args.base / split}: no tiles; run python -m ratcli.datasets "
                             f"he {args.base}")
        (args.out / split).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, args.out / split / f.name)
        print(f"{split}: {len(files)} bundled tiles")
    for split, names in (("train", TRAIN), ("val", VAL)):
        for name in names:
            rgb = read(he / f"{name}.png").array[0]
            tiles = list(tissue_tiles(rgb, args.tile))
            keep = np.unique(np.linspace(0, len(tiles) - 1, min(args.per_image, len(tiles)))
                             .round().astype(int))
            for i in keep:
                y, x, patch = tiles[i]
                write_tile(patch, args.out / split / f"{name}-y{y:04d}-x{x:04d}.png")
            print(f"{split}: {len(keep)} of {len(tiles)} tissue tiles of {name}")
    (args.out / "test").mkdir(parents=True, exist_ok=True)
    for name in TEST:
        shutil.copyfile(he / f"{name}.png", args.out / "test" / f"{name}.png")
        print(f"test: {name} whole")


if __name__ == "__main__":
    main()
