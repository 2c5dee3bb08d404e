"""Streaming writer of pyramidal tiled BigTIFFs that OpenSlide opens as "generic-tiff"
with every level, and the one configuration every slide output uses (`SLIDE_WRITER`).

The writer takes level-0 tiles in row-major order and never holds more than a few tiles:
while a level is written, each tile is also halved (2x2 mean) into a hidden, already
unlinked scratch file holding the next level, tile-major, so memory does not grow with
the slide. Levels are separate IFDs (reduced-resolution pages), not OME SubIFDs, which
OpenSlide does not see. Resolution tags are in pixels per centimetre, which OpenSlide
reports as `openslide.mpp-x` / `openslide.mpp-y`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from ratcli.errors import OutputNotWritableError, UsageError

__all__ = [
    "SlideCompression",
    "SlideWriterConfig",
    "SLIDE_WRITER",
    "PyramidWriter",
    "pyramid_shapes",
    "slide_tiles",
]


class SlideCompression(StrEnum):
    """Tile compression of the output pyramid."""

    JPEG = "jpeg"
    LOSSLESS = "lossless"  # deflate


@dataclass(frozen=True)
class SlideWriterConfig:
    """How an output pyramid is laid out and compressed.

    tile_px: edge of the stored tiles in output pixels, 256 or 512.
    min_levels: levels written even for a small image (halving each time); more are
        added until the smallest level fits one tile.
    compression: SlideCompression; quality: JPEG quality 1-100.
    """

    tile_px: int = 256
    min_levels: int = 2
    compression: SlideCompression = SlideCompression.JPEG
    quality: int = 90

    def __post_init__(self) -> None:
        if self.tile_px not in (256, 512):
            raise UsageError(f"slide tile edge {self.tile_px} px: must be 256 or 512")
        if self.min_levels < 1:
            raise UsageError(f"slide pyramid min_levels {self.min_levels}: must be at least 1")
        if not 1 <= self.quality <= 100:
            raise UsageError(f"slide JPEG quality {self.quality}: must be between 1 and 100")
        object.__setattr__(self, "compression", SlideCompression(self.compression))


# The one slide output layout: `rat sr`, the Python API and io.write all use it, so the
# same input gives the same pyramid whichever way it is restored. 256 px tiles let the
# shipped SR tasks' model tiles (256 px for x2, 128 for x4) fill chunks with the least
# recomputation (`ratcli.inference.slide.plan_chunks`: 2.0x against 2.7x for 512 px).
SLIDE_WRITER = SlideWriterConfig()


class PyramidWriter:
    """Write a pyramidal tiled BigTIFF from level-0 tiles given in row-major order.

    path: the file to write (use `atomic_output` for a safe final path).
    width, height: level-0 size in pixels.
    config: tile edge, levels and compression (default: the shared SLIDE_WRITER).
    mpp: (x, y) microns per pixel of level 0, or None (no resolution tags).
    description: ImageDescription of level 0 (provenance, or OME-XML as UTF-8 bytes).
    channels: 3 (RGB) or 4 (RGB + unassociated alpha; lossless compression only).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        config: SlideWriterConfig = SLIDE_WRITER,
        mpp: tuple[float, float] | None = None,
        description: str | bytes = "",
        channels: int = 3,
    ) -> None:
        if channels not in (3, 4):
            raise UsageError(f"slide pyramid of {channels} channels: must be 3 (RGB) or 4 (RGBA)")
        if channels == 4 and config.compression is SlideCompression.JPEG:
            raise UsageError("JPEG tiles cannot hold alpha; use lossless compression")
        self.path = Path(path)
        self.config = config
        self.channels = channels
        self.tile_px = config.tile_px
        self.shapes = pyramid_shapes(height, width, tile_px=config.tile_px,
                                     min_levels=config.min_levels)
        self.mpp = mpp
        self.description = description

    def write(self, tiles: Iterable[np.ndarray]) -> list[tuple[int, int]]:
        """Consume level-0 tiles ((<=tile_px, <=tile_px, channels) uint8, clipped at the
        right and bottom edges) row by row; returns the (height, width) of every level."""
        import tifffile

        c = self.channels
        stores = [_TileStore(self.path.parent, h, w, self.tile_px, c)
                  for h, w in self.shapes[1:]]
        try:
            with tifffile.TiffWriter(self.path, bigtiff=True) as tw:
                source: Iterable[np.ndarray] = tiles
                for level, shape in enumerate(self.shapes):
                    if level > 0:
                        source = stores[level - 1].tiles()
                    nxt = stores[level] if level < len(stores) else None
                    self._write_level(tw, level, shape,
                                      _checked(source, shape, self.tile_px, c, nxt))
        except OSError as exc:
            raise OutputNotWritableError(f"{self.path}: cannot write ({exc.strerror or exc})"
                                         ) from None
        finally:
            for s in stores:
                s.close()
        return list(self.shapes)

    def _write_level(self, tw, level: int, shape: tuple[int, int],
                     tiles: Iterator[np.ndarray]) -> None:
        h, w = shape
        kwargs: dict = {}
        if self.mpp is not None:
            # pixels per centimetre of this level; OpenSlide reads level 0's as MPP
            fy, fx = self.shapes[0][0] / h, self.shapes[0][1] / w
            kwargs["resolution"] = (1e4 / (self.mpp[0] * fx), 1e4 / (self.mpp[1] * fy))
            kwargs["resolutionunit"] = "CENTIMETER"
        if self.config.compression is SlideCompression.JPEG:
            kwargs.update(compression="jpeg", compressionargs={"level": self.config.quality})
        else:
            kwargs.update(compression="zlib", predictor=True)
        if self.channels == 4:
            kwargs["extrasamples"] = ("unassalpha",)
        tw.write(
            tiles,
            shape=(h, w, self.channels),
            dtype=np.uint8,
            tile=(self.tile_px, self.tile_px),
            photometric="rgb",
            subfiletype=0 if level == 0 else 1,  # 1 = reduced-resolution page
            description=self.description if level == 0 else None,
            metadata=None,
            software="rat",
            **kwargs,
        )


def slide_tiles(rgb: np.ndarray, tile_px: int) -> Iterator[np.ndarray]:
    """(H, W, 3) array -> its tiles of tile_px edge in row-major order, clipped at the
    edges."""
    for y in range(0, rgb.shape[0], tile_px):
        for x in range(0, rgb.shape[1], tile_px):
            yield rgb[y : y + tile_px, x : x + tile_px]


def pyramid_shapes(height: int, width: int, *, tile_px: int, min_levels: int = 2
                   ) -> list[tuple[int, int]]:
    """(height, width) per level, halving until a level fits one tile (>= min_levels)."""
    shapes = [(height, width)]
    while len(shapes) < min_levels or max(shapes[-1]) > tile_px:
        h, w = shapes[-1]
        if (h, w) == (1, 1):
            break
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


def _checked(tiles: Iterable[np.ndarray], shape: tuple[int, int], tile_px: int, channels: int,
             nxt: _TileStore | None) -> Iterator[np.ndarray]:
    """Check each tile's shape, halve it into the next level's store, pass it on."""
    h, w = shape
    ny, nx = -(-h // tile_px), -(-w // tile_px)
    count = 0
    for t in tiles:
        if count >= ny * nx:
            raise ValueError(f"more than {ny * nx} tiles for a {h}x{w} level")
        ty, tx = divmod(count, nx)
        want = (min(tile_px, h - ty * tile_px), min(tile_px, w - tx * tile_px), channels)
        if t.shape != want or t.dtype != np.uint8:
            raise ValueError(f"tile {ty},{tx}: expected {want} uint8, got {t.shape} {t.dtype}")
        if nxt is not None:
            nxt.put(ty * tile_px // 2, tx * tile_px // 2, _halve(t))
        count += 1
        yield t
    if count != ny * nx:
        raise ValueError(f"got {count} tiles for a {h}x{w} level, expected {ny * nx}")


class _TileStore:
    """One pyramid level as raw RGB(A) tiles, tile-major, in an unlinked scratch file.

    Blocks are written with pwrite and tiles read with pread, so no page of it is
    mapped into (and counted against) the process's memory.
    """

    def __init__(self, folder: Path, height: int, width: int, tile_px: int,
                 channels: int = 3) -> None:
        self.height, self.width, self.tile_px, self.c = height, width, tile_px, channels
        self.nx = -(-width // tile_px)
        self.ny = -(-height // tile_px)
        fd, name = tempfile.mkstemp(prefix=".rat-tmp-level-", dir=folder)
        os.unlink(name)  # gone from the folder at once; space freed when fd closes
        self.fd = fd
        os.ftruncate(fd, self.ny * self.nx * tile_px * tile_px * channels)

    def put(self, y: int, x: int, block: np.ndarray) -> None:
        """Write block (h, w, c) at level pixel (y, x); it must lie inside one tile."""
        t, c = self.tile_px, self.c
        ty, tx, oy, ox = y // t, x // t, y % t, x % t
        base = (ty * self.nx + tx) * t * t * c
        for r, row in enumerate(block):
            os.pwrite(self.fd, row.tobytes(), base + ((oy + r) * t + ox) * c)

    def tiles(self) -> Iterator[np.ndarray]:
        """Every tile in row-major order, clipped to the level's edges."""
        t, c = self.tile_px, self.c
        for ty in range(self.ny):
            for tx in range(self.nx):
                raw = os.pread(self.fd, t * t * c, (ty * self.nx + tx) * t * t * c)
                full = np.frombuffer(raw, np.uint8).reshape(t, t, c)
                yield full[: min(t, self.height - ty * t), : min(t, self.width - tx * t)]

    def close(self) -> None:
        os.close(self.fd)


def _halve(t: np.ndarray) -> np.ndarray:
    """2x2 mean, (h, w, c) -> (ceil(h/2), ceil(w/2), c) uint8; odd edges replicated."""
    h, w = t.shape[:2]
    if h % 2 or w % 2:
        t = np.pad(t, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    a = t.astype(np.uint16)
    s = a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)
