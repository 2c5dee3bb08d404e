"""Whole-slide restoration that streams: memory does not grow with the slide.

Slides go through io like every format, but chunk by chunk: `io.open_stream` reads
level-0 regions and `io.write_stream` writes the output pyramid tile by tile in
row-major order, with the shared layout `io.SLIDE_WRITER` (the same as `io.write` of
an in-memory slide). Output tiles are made in chunks of `chunk_tiles` tiles along a
band of `band_rows` tile rows (as many as one Restorer tile holds with the halo, within
a memory cap; the band is held until its tiles go out row by row): the matching level-0
input region plus a halo of context on every side is read, restored with the `Restorer`
(which tiles and blends inside the chunk), cropped back and handed to the writer. A
thin last band or column joins its neighbour when both fit one Restorer tile
(`chunk_spans`), so a small slide is one chunk. Chunks with no tissue on the
thumbnail's tissue mask are upsampled bicubically instead.

Entry point: `restore_stream(source, out, restorer, provenance=...) -> SlideReport`
(atomic output, like io.write). `restore_slide` is the older form (writes `dst`
directly, provenance as a description string), kept until every caller uses
`restore_stream`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ratcli.errors import InputFormatError
from ratcli.inference.restorer import Restorer
from ratcli.inference.tiling import TileGrid
from ratcli.inference.tissue import TissueMap, tissue_mask
from ratcli.io import Source, find_inputs, open_stream, write_stream
from ratcli.io.image import Domain, Image
from ratcli.io.plain_meta import resize_alpha
from ratcli.io.wsi import (
    SLIDE_WRITER,
    PyramidWriter,
    RegionReader,
    SlideReader,
    SlideWriterConfig,
)

__all__ = ["restore_stream", "restore_slide", "SlideReport", "plan_chunks", "band_rows",
           "chunk_spans"]

ProgressFn = Callable[[int, int], None]
BAND_BYTES = 1 << 28  # most restored output held while a band of tile rows is finished


@dataclass
class SlideReport:
    """What a slide restoration did.

    levels: (height, width) of every written level; tile_px: edge of the stored tiles;
    mpp: output (x, y) microns per pixel or None; chunks_model / chunks_background:
    chunks restored by the model / upsampled bicubically; tissue_fraction: share of the
    thumbnail marked as tissue.
    """

    levels: list[tuple[int, int]] = field(default_factory=list)
    tile_px: int = SLIDE_WRITER.tile_px
    mpp: tuple[float, float] | None = None
    chunks_model: int = 0
    chunks_background: int = 0
    tissue_fraction: float = 0.0


def restore_stream(
    source: Source | str | Path,
    out: str | Path,
    restorer: Restorer,
    *,
    overwrite: bool = False,
    provenance: dict | None = None,
    slide_writer: SlideWriterConfig = SLIDE_WRITER,
    chunk_tiles: int | None = None,
    halo_px: int | None = None,
    skip_background: bool = True,
    on_progress: ProgressFn | None = None,
) -> SlideReport:
    """Restore the slide or big plain image `source` into `out`, streaming.

    out: a pyramidal tiled BigTIFF (JPEG tiles for a slide, lossless for a flat TIFF),
        or a PNG for a PNG/JPEG input; it appears atomically (an existing one is
        refused unless overwrite). Alpha (a fourth channel) is resized bicubically
        beside the restored RGB.
    provenance: {"task", "weights", "weights_sha256"} for the ImageDescription.
    slide_writer: output tile edge, levels and compression (default: the shared one).
    chunk_tiles: output tiles per chunk (None: the least recomputation, `plan_chunks`).
    halo_px: level-0 input pixels of context around each chunk (default: half the
        Restorer's overlap, a multiple of 8, at least 16).
    skip_background: chunks without tissue take a cheap bicubic path.
    on_progress: called after every chunk with (chunks done, chunks total) for the
        whole slide; default: the Restorer's own on_progress, so one progress bar
        runs once over the slide instead of restarting for every chunk.
    Output size is the input's times the task's scale; MPP is the input's / scale.
    Returns the SlideReport.
    """
    if not isinstance(source, Source):  # the Source says which format writes the output
        found = find_inputs(source)
        source = found[0] if len(found) == 1 else source
    path = source.path if isinstance(source, Source) else Path(source)
    inputs = source.files if isinstance(source, Source) else (path,)
    with open_stream(source) as reader:
        report, chunks = _plan(reader, restorer, slide_writer, chunk_tiles=chunk_tiles,
                               halo_px=halo_px, skip_background=skip_background,
                               on_progress=on_progress)
        report.levels = write_stream(
            chunks.tiles(), out, width=reader.width * restorer.scale,
            height=reader.height * restorer.scale, mpp=report.mpp, overwrite=overwrite,
            provenance=provenance, inputs=[path, *inputs], slide_writer=slide_writer,
            source=source if isinstance(source, Source) else None, meta=reader.meta)
    return report


def restore_slide(
    src: str | Path,
    dst: str | Path,
    restorer: Restorer,
    *,
    slide_writer: SlideWriterConfig = SLIDE_WRITER,
    chunk_tiles: int | None = None,
    halo_px: int | None = None,
    skip_background: bool = True,
    description: str = "",
    on_progress: ProgressFn | None = None,
) -> SlideReport:
    """Like `restore_stream`, but `dst` is written directly (wrap it in `atomic_output`
    for a safe final path) and `description` is level 0's ImageDescription as given."""
    with SlideReader(src) as reader:
        report, chunks = _plan(reader, restorer, slide_writer, chunk_tiles=chunk_tiles,
                               halo_px=halo_px, skip_background=skip_background,
                               on_progress=on_progress)
        writer = PyramidWriter(dst, width=reader.width * restorer.scale,
                               height=reader.height * restorer.scale, config=slide_writer,
                               mpp=report.mpp, description=description)
        report.levels = writer.write(chunks.tiles())
    return report


def band_rows(restorer_tile_px: int, *, scale: int, halo_px: int, width_px: int,
              tile_px: int = SLIDE_WRITER.tile_px) -> int:
    """Output-tile rows per chunk: as many as fit, with their halo, in one Restorer tile
    (taller chunks recompute less halo), at least 1, and no more than BAND_BYTES of
    output buffered across the slide's output width `width_px` (the writer takes tiles
    row by row, so a band of rows is held until its last chunk is done)."""
    band = tile_px // scale
    fit = (restorer_tile_px - 2 * halo_px) // band
    return max(1, min(fit, _band_cap(width_px, tile_px)))


def _band_cap(width_px: int, tile_px: int) -> int:
    """Most output-tile rows whose band across `width_px` output px fits BAND_BYTES."""
    return BAND_BYTES // (tile_px * width_px * 3)


def chunk_spans(count: int, step: int, *, band_px: int, extent_px: int, halo_px: int,
                limit_px: int, max_step: int | None = None) -> list[tuple[int, int]]:
    """Output-tile index ranges [a, b) of the chunks along one axis: `step` tiles each,
    except that the last chunk joins the one before it when together they still fit one
    Restorer tile (`limit_px` input px, with the halo only on a side that is not the
    slide's edge; at most `max_step` tiles). A remainder of one thin row or column would
    otherwise pay a whole halo and a model call: a slide no larger than one Restorer
    tile becomes one chunk, computed exactly as in memory.

    band_px: input px per output tile; extent_px: the slide's input px along the axis.
    """
    spans = [(a, min(a + step, count)) for a in range(0, count, step)]
    if len(spans) > 1:
        a = spans[-2][0]
        need = extent_px - a * band_px + (halo_px if a > 0 else 0)
        if need <= limit_px and count - a <= (max_step or count):
            spans[-2:] = [(a, count)]
    return spans


def plan_chunks(restorer_tile_px: int, overlap_px: int, *, scale: int, halo_px: int,
                tile_px: int = SLIDE_WRITER.tile_px, max_chunk_tiles: int = 8,
                rows: int = 1) -> int:
    """Output tiles per chunk that waste the least model work.

    A chunk is `rows` output-tile rows high (`tile_px` output pixels each) and `k` tiles
    wide; with its halo (`halo_px` input pixels) it is cut into the Restorer's tiles (edge
    `restorer_tile_px`, `overlap_px` input pixels shared). The plan takes the fewest tiles
    per chunk whose input pixels computed per input pixel kept are within 5 % of the
    least: narrower chunks let more of a slide's background be skipped.
    """
    band = tile_px // scale  # input rows per output tile row
    waste = {}
    for k in range(1, max_chunk_tiles + 1):
        h, w = rows * band + 2 * halo_px, k * band + 2 * halo_px
        grid = TileGrid.plan(h, w, tile=restorer_tile_px, overlap=overlap_px)
        waste[k] = len(grid) * grid.tile_h * grid.tile_w / (rows * band * k * band)
    least = min(waste.values())
    return min(k for k, v in waste.items() if v <= least * 1.05)


def _plan(reader: RegionReader, restorer: Restorer, slide_writer: SlideWriterConfig, *,
          chunk_tiles: int | None, halo_px: int | None, skip_background: bool,
          on_progress: ProgressFn | None) -> tuple[SlideReport, _Chunker]:
    """Check the task, fill in the defaults, find the tissue: (report, chunk source)."""
    s = restorer.scale
    if restorer.task.channels != 3:
        raise InputFormatError(f"{reader.path}: slides are RGB; task {restorer.task.name} "
                               "restores greyscale images")
    overlap_px = round(restorer.tile * restorer.overlap)
    if halo_px is None:
        halo_px = max(16, 8 * round(overlap_px / 16))
    rows = band_rows(restorer.tile, scale=s, halo_px=halo_px, width_px=reader.width * s,
                     tile_px=slide_writer.tile_px)
    if chunk_tiles is None:
        chunk_tiles = plan_chunks(restorer.tile, overlap_px, scale=s, halo_px=halo_px,
                                  tile_px=slide_writer.tile_px, rows=rows)
    tissue = TissueMap(tissue_mask(reader.thumbnail()), width=reader.width,
                       height=reader.height)
    mpp = None if reader.mpp is None else (reader.mpp[0] / s, reader.mpp[1] / s)
    report = SlideReport(tile_px=slide_writer.tile_px, mpp=mpp,
                         tissue_fraction=tissue.fraction)
    chunks = _Chunker(reader, restorer, tissue, tile_px=slide_writer.tile_px,
                      chunk_tiles=chunk_tiles, rows=rows, halo_px=halo_px,
                      skip_background=skip_background, report=report,
                      on_progress=on_progress if on_progress is not None
                      else restorer.on_progress)
    return report, chunks


class _Chunker:
    """Level-0 output tiles of the restored slide, in row-major order, chunk by chunk."""

    def __init__(self, reader: RegionReader, restorer: Restorer, tissue: TissueMap, *,
                 tile_px: int, chunk_tiles: int, rows: int, halo_px: int,
                 skip_background: bool, report: SlideReport,
                 on_progress: ProgressFn | None) -> None:
        self.reader, self.restorer, self.tissue = reader, restorer, tissue
        self.s = restorer.scale
        self.tile_px, self.chunk_tiles, self.halo_px = tile_px, chunk_tiles, halo_px
        self.rows = rows
        # the band buffer's cap, which also bounds a merged last band
        self.max_rows = max(rows, _band_cap(reader.width * restorer.scale, tile_px))
        self.skip_background = skip_background
        self.report, self.on_progress = report, on_progress

    def tiles(self) -> Iterator[np.ndarray]:
        s, t = self.s, self.tile_px
        H, W = self.reader.height * s, self.reader.width * s
        ny, nx = -(-H // t), -(-W // t)
        limit = self.restorer.tile  # input px one Restorer tile holds
        row_spans = chunk_spans(ny, self.rows, band_px=t // s, extent_px=self.reader.height,
                                halo_px=self.halo_px, limit_px=limit,
                                max_step=self.max_rows)
        col_spans = chunk_spans(nx, self.chunk_tiles, band_px=t // s,
                                extent_px=self.reader.width, halo_px=self.halo_px,
                                limit_px=limit)
        total, done = len(row_spans) * len(col_spans), 0
        for ty0, ty1 in row_spans:
            # A band of tile rows, clipped at the slide's bottom edge.
            oy = ty0 * t
            oh = min(ty1 * t, H) - oy
            band = (np.empty((oh, W, self.reader.channels), dtype=np.uint8)
                    if ty1 - ty0 > 1 else None)
            for c0, c1 in col_spans:
                ox = c0 * t
                ow = min(c1 * t, W) - ox
                out = self._chunk(oy // s, ox // s, oh // s, ow // s)
                done += 1
                if self.on_progress is not None:
                    self.on_progress(done, total)
                if band is None:
                    yield from _split(out, t, c1 - c0)
                else:
                    band[:, ox : ox + ow] = out
            if band is not None:  # the writer takes tiles row by row
                for r in range(0, oh, t):
                    yield from _split(band[r : r + t], t, nx)

    def _chunk(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Restored level-0 rectangle (h*s, w*s, channels) uint8, computed with a halo."""
        r, halo, s = self.reader, self.halo_px, self.s
        y0, x0 = max(0, y - halo), max(0, x - halo)
        y1, x1 = min(r.height, y + h + halo), min(r.width, x + w + halo)
        region = r.read(x0, y0, x1 - x0, y1 - y0)  # (y1-y0, x1-x0, channels)
        rgb = np.ascontiguousarray(region[..., :3])
        if self.skip_background and not self.tissue.any(x, y, w, h):
            self.report.chunks_background += 1
            big = _bicubic(rgb, s)
        else:
            self.report.chunks_model += 1
            image = Image(rgb[None], domain=Domain.RGB8, modality="SM", source=r.path)
            big = self._restore(image)
        if region.shape[-1] == 4:  # alpha goes beside the RGB, resized as in memory
            alpha = resize_alpha(region[..., 3], big.shape[0], big.shape[1])
            big = np.concatenate([big, alpha[..., None]], axis=-1)
        return big[(y - y0) * s : (y - y0 + h) * s, (x - x0) * s : (x - x0 + w) * s]

    def _restore(self, image: Image) -> np.ndarray:
        """The Restorer's output for one chunk, without its per-image tile progress
        (the slide reports progress per chunk, over the whole slide)."""
        own = self.restorer.on_progress
        self.restorer.on_progress = None
        try:
            return self.restorer.restore(image).array[0]
        finally:
            self.restorer.on_progress = own


def _split(chunk: np.ndarray, tile_px: int, count: int) -> Iterable[np.ndarray]:
    """The `count` output tiles of a chunk, left to right."""
    return (chunk[:, c * tile_px : (c + 1) * tile_px] for c in range(count))


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
