"""Whole-slide restoration that streams: memory does not grow with the slide.

The output pyramid is written tile by tile in row-major order. Output tiles are made in
chunks of `chunk_tiles` tiles along one tile row: the matching level-0 input region plus
a `halo` of context on every side is read, restored with the `Restorer` (which tiles
and blends inside the chunk), cropped back and handed to the `PyramidWriter`. Chunks
with no tissue on the thumbnail's tissue mask are upsampled bicubically instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ratcli.errors import InputFormatError
from ratcli.inference.restorer import Restorer
from ratcli.inference.tiling import TileGrid
from ratcli.inference.tissue import TissueMap, tissue_mask
from ratcli.io.image import Domain, Image
from ratcli.io.wsi import PyramidWriter, SlideCompression, SlideReader

__all__ = ["restore_slide", "SlideReport", "plan_chunks"]


@dataclass
class SlideReport:
    """What `restore_slide` did.

    levels: (height, width) of every written level; mpp: output (x, y) microns per pixel
    or None; chunks_model / chunks_background: chunks restored by the model / upsampled
    bicubically; tissue_fraction: share of the thumbnail marked as tissue.
    """

    levels: list[tuple[int, int]] = field(default_factory=list)
    mpp: tuple[float, float] | None = None
    chunks_model: int = 0
    chunks_background: int = 0
    tissue_fraction: float = 0.0


def restore_slide(
    src: str | Path,
    dst: str | Path,
    restorer: Restorer,
    *,
    tile: int | None = None,
    chunk_tiles: int | None = None,
    halo: int | None = None,
    compression: str | SlideCompression = SlideCompression.JPEG,
    quality: int = 90,
    skip_background: bool = True,
    description: str = "",
    on_progress: Callable[[int, int], None] | None = None,
) -> SlideReport:
    """Restore the slide at `src` into a pyramidal tiled BigTIFF at `dst`.

    dst: written directly (wrap it in `atomic_output` for a safe final path).
    tile: output tile edge, 256 or 512; chunk_tiles: output tiles per chunk. None
        (default) picks both so that the Restorer's tiles fit the chunks with the least
        recomputation (see `plan_chunks`).
    halo: level-0 context pixels around each chunk (default: half the Restorer's
        overlap, a multiple of 8, at least 16).
    skip_background: chunks without tissue take a cheap bicubic path.
    on_progress: called with (chunks done, chunks total).
    Output size is the input's times the task's scale; MPP is the input's / scale.
    """
    s = restorer.scale
    if restorer.task.channels != 3:
        raise InputFormatError(f"{src}: slides are RGB; task {restorer.task.name} "
                               "restores greyscale images")
    if halo is None:
        halo = max(16, 8 * round(restorer.tile * restorer.overlap / 16))
    if tile is None or chunk_tiles is None:
        auto_tile, auto_k = plan_chunks(restorer.tile, round(restorer.tile * restorer.overlap),
                                        scale=s, halo=halo, tiles=(tile,) if tile else (512, 256))
        tile, chunk_tiles = tile or auto_tile, chunk_tiles or auto_k
    with SlideReader(src) as reader:
        tissue = TissueMap(tissue_mask(reader.thumbnail()), width=reader.width,
                           height=reader.height)
        mpp = None if reader.mpp is None else (reader.mpp[0] / s, reader.mpp[1] / s)
        writer = PyramidWriter(dst, width=reader.width * s, height=reader.height * s,
                               tile=tile, mpp=mpp, compression=compression, quality=quality,
                               description=description)
        report = SlideReport(mpp=mpp, tissue_fraction=tissue.fraction)
        chunks = _Chunker(reader, restorer, tissue, tile=tile, chunk_tiles=chunk_tiles,
                          halo=halo, skip_background=skip_background, report=report,
                          on_progress=on_progress)
        report.levels = writer.write(chunks.tiles())
    return report


def plan_chunks(restorer_tile: int, overlap: int, *, scale: int, halo: int,
                tiles: tuple[int, ...] = (512, 256), max_chunk_tiles: int = 8
                ) -> tuple[int, int]:
    """(output tile edge, output tiles per chunk) that waste the least model work.

    A chunk is one output-tile row high and `k` tiles wide; with its halo it is cut into
    the Restorer's tiles (edge `restorer_tile`, `overlap` input pixels). The plan
    minimises input pixels computed per input pixel kept, preferring larger output
    tiles and then fewer tiles per chunk when equal.
    """
    best: tuple[float, int, int] | None = None
    for t in tiles:
        band = t // scale  # input rows per output tile row
        for k in range(1, max_chunk_tiles + 1):
            h, w = band + 2 * halo, k * band + 2 * halo
            grid = TileGrid.plan(h, w, tile=restorer_tile, overlap=overlap)
            waste = len(grid) * grid.tile_h * grid.tile_w / (band * k * band)
            if best is None or waste < best[0] - 1e-9:
                best = (waste, t, k)
    return best[1], best[2]


class _Chunker:
    """Level-0 output tiles of the restored slide, in row-major order, chunk by chunk."""

    def __init__(self, reader: SlideReader, restorer: Restorer, tissue: TissueMap, *,
                 tile: int, chunk_tiles: int, halo: int, skip_background: bool,
                 report: SlideReport, on_progress: Callable[[int, int], None] | None) -> None:
        self.reader, self.restorer, self.tissue = reader, restorer, tissue
        self.s = restorer.scale
        self.tile, self.chunk_tiles, self.halo = tile, chunk_tiles, halo
        self.skip_background = skip_background
        self.report, self.on_progress = report, on_progress

    def tiles(self) -> Iterator[np.ndarray]:
        s, t = self.s, self.tile
        H, W = self.reader.height * s, self.reader.width * s
        ny, nx = -(-H // t), -(-W // t)
        per_row = -(-nx // self.chunk_tiles)
        done = 0
        for ty in range(ny):
            for c0 in range(0, nx, self.chunk_tiles):
                c1 = min(c0 + self.chunk_tiles, nx)
                # Output rectangle of this chunk, clipped at the slide's edges.
                oy, ox = ty * t, c0 * t
                oh, ow = min(t, H - oy), min(c1 * t, W) - ox
                out = self._chunk(oy // s, ox // s, oh // s, ow // s)
                done += 1
                if self.on_progress is not None:
                    self.on_progress(done, ny * per_row)
                for c in range(c1 - c0):
                    yield out[:, c * t : (c + 1) * t]

    def _chunk(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Restored level-0 rectangle (h*s, w*s, 3) uint8, computed with a halo."""
        r = self.reader
        y0, x0 = max(0, y - self.halo), max(0, x - self.halo)
        y1, x1 = min(r.height, y + h + self.halo), min(r.width, x + w + self.halo)
        region = r.read(x0, y0, x1 - x0, y1 - y0)  # (y1-y0, x1-x0, 3)
        if self.skip_background and not self.tissue.any(x, y, w, h):
            self.report.chunks_background += 1
            big = _bicubic(region, self.s)
        else:
            self.report.chunks_model += 1
            image = Image(region[None], domain=Domain.RGB8, modality="SM", source=r.path)
            big = self.restorer.restore(image).array[0]
        s = self.s
        return big[(y - y0) * s : (y - y0 + h) * s, (x - x0) * s : (x - x0 + w) * s]


def _bicubic(rgb: np.ndarray, scale: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (h*scale, w*scale, 3) uint8, bicubic (Pillow: several times
    faster than torch on uint8, and this path handles most of a slide)."""
    if scale == 1:
        return rgb
    from PIL import Image as PILImage

    h, w = rgb.shape[:2]
    up = PILImage.fromarray(np.ascontiguousarray(rgb)).resize((w * scale, h * scale),
                                                             PILImage.Resampling.BICUBIC)
    return np.asarray(up)
