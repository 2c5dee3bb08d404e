"""Peak memory of `rat sr` on big flat (stripped, uncompressed) RGB TIFFs: 2000^2 vs 8000^2.

Each TIFF is glass with the same three 512x512 H&E-like patches at the same places (one
uncompressed strip, as tifffile and many lab tools write it), so the model does the same
work on every size and the rest takes the bicubic background path; what grows 16x is the
data streamed through the reader, the chunker and the writer. Each run is a fresh
`python -m ratcli sr` subprocess (under a small wrapper that reports the child's
ru_maxrss: wsi_memory.measure), with a small random-init checkpoint (fast settings:
width 8, one RAT group) and the classical partitioner (the default one would add its own
model's memory).
Prints peak RSS and wall time per size and the largest / smallest ratio (target <= 1.2).
`--in-memory N` also runs size N the old way (the whole image in memory, as every plain
image was before streaming) for comparison; `--png` also runs each size as a PNG (which
cannot be decoded in parts: decoded once, then the work and the writing stream).

Run: `python benchmarks/flat_tiff_memory.py [--sizes 2000 8000 --scale 2 --in-memory 2000
--png]`.
Needs about 1 GB of free disk for the 8000^2 TIFF and its x2 output (deleted after).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

# the same subprocess measurement and checkpoint as the slide benchmark beside this file
from wsi_memory import measure, small_sr_checkpoint

from ratcli.phantoms import he_tile

PATCH = 512
PATCHES_AT = ((200, 300), (900, 1300), (1400, 400))  # top-left (y, x) of the tissue

# `rat` with plain images never streamed: the path every PNG/TIFF took before.
IN_MEMORY = ("import sys; from ratcli.io import plain_stream; "
             "plain_stream.STREAM_MIN_PIXELS = 1 << 62; "
             "from ratcli.cli import app; sys.argv[0] = 'rat'; app(prog_name='rat')")


def flat_tiff(path: Path, size: int) -> None:
    """A size x size RGB TIFF in one uncompressed strip, filled band by band (memmap)."""
    rng = np.random.default_rng(0)
    tissue = he_tile(size=PATCH)
    image = tifffile.memmap(path, shape=(size, size, 3), dtype=np.uint8, photometric="rgb",
                            resolution=(4e4, 4e4), resolutionunit="CENTIMETER")
    for y in range(0, size, 1000):
        band = np.clip(243 + 1.5 * rng.standard_normal((min(1000, size - y), size, 1)), 0,
                       255).astype(np.uint8)
        image[y : y + band.shape[0]] = band
    for y, x in PATCHES_AT:
        image[y : y + PATCH, x : x + PATCH] = tissue
    image.flush()
    del image


def as_png(tif: Path, png: Path) -> None:
    """The same pixels as a PNG (fast deflate); the TIFF is removed."""
    from PIL import Image as PILImage

    PILImage.fromarray(tifffile.imread(tif)).save(png, compress_level=1)
    tif.unlink()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    ap.add_argument("--scale", type=int, default=2, choices=(2, 4))
    ap.add_argument("--tile", type=int, default=64, help="Restorer tile (input pixels)")
    ap.add_argument("--in-memory", type=int, nargs="*", default=[],
                    help="sizes also run with the whole image in memory (the old path)")
    ap.add_argument("--png", action="store_true", help="also run each size as a PNG")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    if min(args.sizes + args.in_memory) < 2000:
        raise SystemExit("sizes must be at least 2000 (the tissue patches lie within it)")

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        weights = small_sr_checkpoint(work / "sr.pt", args.scale)
        runs = [(size, "streamed", ".tif") for size in args.sizes]
        runs += [(size, "in memory", ".tif") for size in args.in_memory]
        runs += [(size, "streamed", ".png") for size in args.sizes if args.png]
        rows = []
        for size, how, suffix in runs:
            src, out = work / f"flat{size}{suffix}", work / f"out{size}{suffix}"
            flat_tiff(work / f"flat{size}.tif", size)
            if suffix == ".png":
                as_png(work / f"flat{size}.tif", src)
            rat = ([sys.executable, "-m", "ratcli"] if how == "streamed"
                   else [sys.executable, "-c", IN_MEMORY])
            cmd = [*rat, "sr", str(src), "-o", str(out), "--scale", str(args.scale),
                   "--weights", str(weights), "--tile", str(args.tile), "--quiet",
                   "--device", "cpu", "--regions", "classical"]
            kib, seconds = measure(cmd)
            levels = 1
            if suffix == ".tif":
                with tifffile.TiffFile(out) as tif:
                    levels = len(tif.pages)
            rows.append((size, f"{how} {suffix}", kib, seconds, out.stat().st_size, levels))
            src.unlink()
            out.unlink()

    print(f"rat sr x{args.scale} of flat stripped RGB TIFFs, RAT width 8 (1 group), "
          f"restorer tile {args.tile}, three 512x512 tissue patches, 1 thread")
    print("input | path | wall s | output MB | output pages | peak RSS MiB")
    print("--- | --- | --- | --- | --- | ---")
    for size, how, kib, seconds, nbytes, levels in rows:
        print(f"{size}x{size} | {how} | {seconds:.1f} | {nbytes / 1e6:.0f} | {levels} | "
              f"{kib / 1024:.0f}")
    streamed = [r for r in rows if r[1] == "streamed .tif"]
    if len(streamed) > 1:
        ratio = streamed[-1][2] / streamed[0][2]
        print(f"peak RSS ratio {streamed[-1][0]}^2 / {streamed[0][0]}^2 (streamed): "
              f"{ratio:.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
