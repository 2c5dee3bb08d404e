"""Tiled vs one-shot inference time with the real RAT (width 32) at 25% overlap.

For one CT slice (default 384x384, tiles of 128), measured side by side in this process (best of
`--repeats`, variants interleaved):

- one-shot: the whole slice in one forward pass;
- tiled: `Restorer.restore` (normalise, pad, cut tiles, batched forwards, cosine
  blending, crop, denormalise) at `--tile` with 25% overlap;
- bare tiles: the same tiles through the bare model, nothing else.

Tiling computes more pixels than the slice has (the overlaps): `pixel ratio` is the
tiles' pixels over the (16-padded) slice's. The overhead beyond those extra pixels is
`tiled / (one-shot x pixel ratio) - 1` (target <= 15%); `tiled / bare - 1` isolates the
tiling machinery itself. Two region settings: one region per image (region attention
is global, so its cost grows with the square of the tile area and one-shot pays more
per pixel than tiles do) and 64-pixel blocks (local regions: the same cost per pixel
whatever the tile, the fair comparison).

Run: `python benchmarks/tiling.py [--size 384 --tile 128 --width 32 --repeats 2]`.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch

from ratcli.inference import Restorer, TileGrid
from ratcli.io import Domain, Image
from ratcli.models import RATConfig, build_rat
from ratcli.models.rat import pad_to_multiple
from ratcli.phantoms import ct_phantom
from ratcli.tasks import TASKS


def blocks(edge: int):
    """Partitioner: square regions of `edge` pixels (local attention)."""

    def partition(slice2d: np.ndarray) -> np.ndarray:
        h, w = slice2d.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        return ((yy // edge) * (w // edge + 1) + xx // edge).astype(np.int32)

    return partition


def one_shot(model, x: torch.Tensor, regions: torch.Tensor | None) -> None:
    model(x[None], None if regions is None else regions[None])


def bare_tiles(model, x: torch.Tensor, regions: torch.Tensor | None, *, tile: int,
               overlap: int, batch: int) -> None:
    """The Restorer's tiles through the model, without blending or bookkeeping."""
    xp = pad_to_multiple(x, 16)
    rp = None if regions is None else pad_to_multiple(regions, 16)
    grid = TileGrid.plan(*xp.shape[-2:], tile=tile, overlap=overlap)
    th, tw = grid.tile_h, grid.tile_w
    origins = grid.origins
    for b in range(0, len(origins), batch):
        part = origins[b : b + batch]
        tiles = torch.stack([xp[:, y : y + th, x0 : x0 + tw] for y, x0 in part])
        reg = None if rp is None else torch.stack([rp[y : y + th, x0 : x0 + tw]
                                                   for y, x0 in part])
        model(tiles, reg)


def best_of(fns: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each function, run round-robin so that load from other
    processes hits every variant alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 gives steadier numbers on a shared machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = build_rat(RATConfig(width=args.width)).eval()
    task = TASKS["ct"]
    image = Image(ct_phantom(size=args.size), domain=Domain.HU, modality="CT")
    x = torch.from_numpy(task.normalize(image.array, task.norm_params(image.array)))
    overlap_px = round(args.tile * args.overlap)
    padded = -(-args.size // 16) * 16
    grid = TileGrid.plan(padded, padded, tile=args.tile, overlap=overlap_px)
    ratio = len(grid) * grid.tile_h * grid.tile_w / padded**2

    print(f"RAT width {args.width}, {args.size}x{args.size} CT slice, tile {args.tile}, "
          f"overlap {args.overlap:.0%} ({overlap_px} px), {len(grid)} tiles, batch "
          f"{args.batch_size}, {torch.get_num_threads()} threads, best of {args.repeats}")
    header = ("regions", "one-shot s", "tiled s", "bare tiles s", "pixel ratio",
              "tiled/(one-shot*ratio)-1", "tiled/bare-1")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for label, partitioner in (("one region", None), ("64 px blocks", blocks(64))):
        regions = None
        if partitioner is not None:
            regions = torch.from_numpy(partitioner(x[0].numpy()).astype(np.int64))
        restorer = Restorer(model, task, tile=args.tile, overlap=args.overlap,
                            batch_size=args.batch_size, device="cpu",
                            partitioner=partitioner)
        with torch.inference_mode():
            t = best_of({
                "one": partial(one_shot, model, x, regions),
                "tiled": partial(restorer.restore, image),
                "bare": partial(bare_tiles, model, x, regions, tile=restorer.tile,
                                overlap=overlap_px, batch=args.batch_size),
            }, args.repeats)
        print(f"{label} | {t['one']:.2f} | {t['tiled']:.2f} | {t['bare']:.2f} | {ratio:.2f} | "
              f"{t['tiled'] / (t['one'] * ratio) - 1:+.1%} | {t['tiled'] / t['bare'] - 1:+.1%}")


if __name__ == "__main__":
    main()
