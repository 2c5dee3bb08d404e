"""Write the synthetic example, examples/slide.tif (deterministic).

    python examples/make_examples.py            # writes into examples/
    python examples/make_examples.py --out DIR

- slide.tif: a pyramidal H&E-like slide from a procedural stain (see make_slide).

ct_series/ and pet.nii.gz are excerpts of real scans, written by
examples/make_real_examples.py (see examples/README.md).
Running it twice gives byte-identical files (fixed seeds and dates).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ratcli.io import atomic_output
from ratcli.phantoms import smooth_noise

__all__ = ["make_slide", "main"]

HERE = Path(__file__).resolve().parent


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
    return [make_slide(args.out)]


if __name__ == "__main__":
    for path in main():
        print(path)
