"""Peak memory of `rat sr` on synthetic slides of 4k^2 and 16k^2 pixels.

Each slide is glass with the same 512x512 patch of H&E-like tissue, so the model does
the same work on both and the rest takes the bicubic background path; what grows 16x
is the data streamed through the reader, the chunker and the pyramid writer. Each run
is a fresh `python -m ratcli sr` subprocess (under a small wrapper that reports the
child's ru_maxrss), with a small random-init checkpoint (fast settings: width 8, one
RAT group). Prints peak RSS per size and the 16k/4k ratio (target <= 1.1).

Run: `python benchmarks/wsi_memory.py [--sizes 4096 16384 --scale 2 --workdir DIR]`.
Needs about 1.5 GB of free disk for the 16k slide and its x2 output (deleted after).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ratcli.io.wsi import PyramidWriter, SlideWriterConfig
from ratcli.models import RATConfig, build_rat, save_checkpoint
from ratcli.phantoms import he_tile

TILE = 512
TISSUE_AT = (1024, 1024)  # top-left of the tissue patch, the same on every slide

# Runs the command in argv[1:], then prints the child's peak RSS in KiB (Linux).
WRAPPER = (
    "import resource, subprocess, sys, json\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(json.dumps({'rc': rc, "
    "'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
)


def synthetic_slide(path: Path, size: int) -> None:
    """A size x size pyramidal slide: noisy glass plus one 512x512 tissue patch."""
    rng = np.random.default_rng(0)
    glass = np.clip(243 + 1.5 * rng.standard_normal((TILE, TILE, 1)), 0, 255)
    glass = np.repeat(glass, 3, axis=2).astype(np.uint8)
    tissue = he_tile(size=TILE)

    def tiles() -> Iterator[np.ndarray]:
        for y in range(0, size, TILE):
            for x in range(0, size, TILE):
                t = tissue if (y, x) == TISSUE_AT else glass
                yield t[: min(TILE, size - y), : min(TILE, size - x)]

    PyramidWriter(path, width=size, height=size, config=SlideWriterConfig(tile_px=TILE),
                  mpp=(0.5, 0.5)).write(tiles())


def small_sr_checkpoint(path: Path, scale: int) -> Path:
    """A random-init SR checkpoint with fast settings (width 8, one RAT group) at `path`."""
    torch.manual_seed(0)
    cfg = RATConfig(in_channels=3, out_channels=3, width=8, num_groups=1,
                    layers_per_group=1, enc_blocks=1, dec_blocks=1, scale=scale)
    save_checkpoint(path, build_rat(cfg), cfg, meta={"task": f"sr-x{scale}"})
    return path


def measure(cmd: list[str]) -> tuple[int, float]:
    """(peak RSS in KiB, wall seconds) of `cmd` run in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True,
                         text=True, env=env, check=True)
    seconds = time.perf_counter() - t0
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    if rec["rc"] != 0:
        raise SystemExit(f"rat sr failed (exit {rec['rc']}): {' '.join(cmd)}")
    return rec["maxrss_kib"], seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--scale", type=int, default=2, choices=(2, 4))
    ap.add_argument("--tile", type=int, default=64, help="Restorer tile (input pixels)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        weights = small_sr_checkpoint(work / "sr.pt", args.scale)
        rows = []
        for size in args.sizes:
            slide, out = work / f"slide{size}.tif", work / f"out{size}.tif"
            synthetic_slide(slide, size)
            cmd = [sys.executable, "-m", "ratcli", "sr", str(slide), "-o", str(out),
                   "--scale", str(args.scale), "--weights", str(weights), "--tile",
                   str(args.tile), "--quiet", "--device", "cpu"]
            kib, seconds = measure(cmd)
            rows.append((size, kib, seconds, out.stat().st_size))
            slide.unlink()
            out.unlink()

    print(f"rat sr x{args.scale}, RAT width 8 (1 group), restorer tile {args.tile}, "
          f"one 512x512 tissue patch per slide, 1 thread")
    print("input | output | wall s | output MB | peak RSS MiB")
    print("--- | --- | --- | --- | ---")
    for size, kib, seconds, nbytes in rows:
        o = size * args.scale
        print(f"{size}x{size} | {o}x{o} | {seconds:.1f} | {nbytes / 1e6:.0f} | {kib / 1024:.0f}")
    if len(rows) > 1:
        ratio = rows[-1][1] / rows[0][1]
        print(f"peak RSS ratio {rows[-1][0]}^2 / {rows[0][0]}^2: {ratio:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
