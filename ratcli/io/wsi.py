"""Whole-slide images: level-0 regions through OpenSlide, and a streaming writer of
pyramidal tiled BigTIFFs that OpenSlide opens as "generic-tiff" with every level.

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
from enum import StrEnum
from pathlib import Path

import numpy as np

from ratcli.errors import InputFormatError, OutputNotWritableError
from ratcli.io.image import Domain, Image

__all__ = [
    "SlideReader",
    "PyramidWriter",
    "SlideCompression",
    "pyramid_shapes",
    "read_slide",
    "write_slide",
    "slide_tiles",
]


class SlideCompression(StrEnum):
    """Tile compression of the output pyramid."""

    JPEG = "jpeg"
    LOSSLESS = "lossless"  # deflate


class SlideReader:
    """Level-0 pixels of a slide (any format OpenSlide reads), as RGB uint8.

    width, height: level-0 size in pixels; mpp: (x, y) microns per pixel or None when
    the file does not say. Transparent pixels (outside the scanned area) come back as
    the slide's background colour (white by default).
    """

    def __init__(self, path: str | Path) -> None:
        import openslide

        self.path = Path(path)
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as exc:
            raise InputFormatError(f"{self.path}: not a readable whole-slide image "
                                   f"({_one_line(exc)})") from None
        self.width, self.height = self._slide.dimensions
        props = self._slide.properties
        self.properties = dict(props)
        self.mpp = _mpp(props)
        bg = props.get("openslide.background-color", "FFFFFF")
        self._background = np.array([int(bg[i : i + 2], 16) for i in (0, 2, 4)], np.float32)

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Level-0 region (h, w, 3) uint8 with its top-left corner at (x, y)."""
        import openslide

        try:
            rgba = np.asarray(self._slide.read_region((x, y), 0, (w, h)))
        except openslide.OpenSlideError as exc:
            raise InputFormatError(f"{self.path}: corrupt slide data in the region at "
                                   f"({x}, {y}) ({_one_line(exc)})") from None
        return _flatten(rgba, self._background)

    def thumbnail(self, max_edge: int = 1024) -> np.ndarray:
        """The whole slide, (h, w, 3) uint8, longest edge at most `max_edge`."""
        import openslide

        try:
            im = self._slide.get_thumbnail((max_edge, max_edge))
        except openslide.OpenSlideError as exc:
            # OpenSlide reads the thumbnail from a low-resolution level: a bad tile there
            raise InputFormatError(f"{self.path}: corrupt slide data in a low-resolution "
                                   f"level ({_one_line(exc)})") from None
        return np.asarray(im.convert("RGB"))

    def close(self) -> None:
        self._slide.close()

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PyramidWriter:
    """Write a pyramidal tiled BigTIFF from level-0 tiles given in row-major order.

    path: the file to write (use `atomic_output` for a safe final path).
    width, height: level-0 size in pixels.
    tile: tile edge, 256 or 512.
    mpp: (x, y) microns per pixel of level 0, or None (no resolution tags).
    compression: SlideCompression; quality: JPEG quality 1-100.
    description: ImageDescription of level 0 (provenance).
    min_levels: levels written even for a small image (halving each time).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        tile: int = 512,
        mpp: tuple[float, float] | None = None,
        compression: str | SlideCompression = SlideCompression.JPEG,
        quality: int = 90,
        description: str = "",
        min_levels: int = 2,
    ) -> None:
        if tile not in (256, 512):
            raise ValueError(f"tile must be 256 or 512, got {tile}")
        self.path = Path(path)
        self.tile = tile
        self.shapes = pyramid_shapes(height, width, tile=tile, min_levels=min_levels)
        self.mpp = mpp
        self.compression = SlideCompression(compression)
        self.quality = quality
        self.description = description

    def write(self, tiles: Iterable[np.ndarray]) -> list[tuple[int, int]]:
        """Consume level-0 tiles ((<=tile, <=tile, 3) uint8, clipped at the right and
        bottom edges) row by row; returns the (height, width) of every level."""
        import tifffile

        stores = [_TileStore(self.path.parent, h, w, self.tile) for h, w in self.shapes[1:]]
        try:
            with tifffile.TiffWriter(self.path, bigtiff=True) as tw:
                source: Iterable[np.ndarray] = tiles
                for level, shape in enumerate(self.shapes):
                    if level > 0:
                        source = stores[level - 1].tiles()
                    nxt = stores[level] if level < len(stores) else None
                    self._write_level(tw, level, shape, _checked(source, shape, self.tile, nxt))
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
        if self.compression is SlideCompression.JPEG:
            kwargs.update(compression="jpeg", compressionargs={"level": self.quality})
        else:
            kwargs.update(compression="zlib", predictor=True)
        tw.write(
            tiles,
            shape=(h, w, 3),
            dtype=np.uint8,
            tile=(self.tile, self.tile),
            photometric="rgb",
            subfiletype=0 if level == 0 else 1,  # 1 = reduced-resolution page
            description=self.description if level == 0 else None,
            metadata=None,
            software="rat",
            **kwargs,
        )


def read_slide(path: str | Path, *, max_pixels: int = 1 << 28) -> Image:
    """A whole slide's level 0 in memory: Image (1, H, W, 3) uint8, spacing in mm
    (MPP / 1000), meta {"format": "slide", "mpp": (x, y) | None, "properties": {...}}.

    Only for slides that fit in memory (`max_pixels`); `rat sr` streams instead
    (ratcli.inference.slide)."""
    with SlideReader(path) as r:
        if r.width * r.height > max_pixels:
            raise InputFormatError(f"{r.path}: slide of {r.width}x{r.height} pixels is too "
                                   "large to read into memory; restore it with `rat sr`")
        rgb = r.read(0, 0, r.width, r.height)
        mm = (1.0, 1.0) if r.mpp is None else (r.mpp[0] / 1000.0, r.mpp[1] / 1000.0)
        return Image(rgb[None], spacing=(mm[0], mm[1], 1.0), domain=Domain.RGB8,
                     modality="SM", source=r.path,
                     meta={"format": "slide", "mpp": r.mpp, "properties": r.properties})


def write_slide(image: Image, path: str | Path, *, overwrite: bool = False,
                provenance: dict | None = None, tile: int = 512,
                compression: str | SlideCompression = SlideCompression.JPEG) -> Path:
    """Write an in-memory RGB image (first slice) as a pyramidal tiled BigTIFF,
    atomically. MPP comes from image.spacing (mm) when meta["mpp"] was set."""
    from ratcli.io.atomic import atomic_output
    from ratcli.io.provenance import describe_provenance

    if not image.is_rgb:
        raise InputFormatError(f"{path}: slides are RGB; this image is greyscale")
    rgb = image.array[0]
    mpp = None
    if image.meta.get("mpp") is not None:
        mpp = (image.spacing[0] * 1000.0, image.spacing[1] * 1000.0)
    inputs = [image.source] if image.source is not None else []
    with atomic_output(path, overwrite=overwrite, inputs=inputs) as tmp:
        PyramidWriter(tmp, width=rgb.shape[1], height=rgb.shape[0], tile=tile, mpp=mpp,
                      compression=compression, description=describe_provenance(provenance)
                      ).write(slide_tiles(rgb, tile))
    return Path(path)


def slide_tiles(rgb: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    """(H, W, 3) array -> its tiles in row-major order, clipped at the edges."""
    for y in range(0, rgb.shape[0], tile):
        for x in range(0, rgb.shape[1], tile):
            yield rgb[y : y + tile, x : x + tile]


def pyramid_shapes(height: int, width: int, *, tile: int, min_levels: int = 2
                   ) -> list[tuple[int, int]]:
    """(height, width) per level, halving until a level fits one tile (>= min_levels)."""
    shapes = [(height, width)]
    while len(shapes) < min_levels or max(shapes[-1]) > tile:
        h, w = shapes[-1]
        if (h, w) == (1, 1):
            break
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


def _checked(tiles: Iterable[np.ndarray], shape: tuple[int, int], tile: int,
             nxt: _TileStore | None) -> Iterator[np.ndarray]:
    """Check each tile's shape, halve it into the next level's store, pass it on."""
    h, w = shape
    ny, nx = -(-h // tile), -(-w // tile)
    count = 0
    for t in tiles:
        if count >= ny * nx:
            raise ValueError(f"more than {ny * nx} tiles for a {h}x{w} level")
        ty, tx = divmod(count, nx)
        want = (min(tile, h - ty * tile), min(tile, w - tx * tile), 3)
        if t.shape != want or t.dtype != np.uint8:
            raise ValueError(f"tile {ty},{tx}: expected {want} uint8, got {t.shape} {t.dtype}")
        if nxt is not None:
            nxt.put(ty * tile // 2, tx * tile // 2, _halve(t))
        count += 1
        yield t
    if count != ny * nx:
        raise ValueError(f"got {count} tiles for a {h}x{w} level, expected {ny * nx}")


class _TileStore:
    """One pyramid level as raw RGB tiles, tile-major, in an unlinked scratch file.

    Blocks are written with pwrite and tiles read with pread, so no page of it is
    mapped into (and counted against) the process's memory.
    """

    def __init__(self, folder: Path, height: int, width: int, tile: int) -> None:
        self.height, self.width, self.tile = height, width, tile
        self.nx = -(-width // tile)
        self.ny = -(-height // tile)
        fd, name = tempfile.mkstemp(prefix=".rat-tmp-level-", dir=folder)
        os.unlink(name)  # gone from the folder at once; space freed when fd closes
        self.fd = fd
        os.ftruncate(fd, self.ny * self.nx * tile * tile * 3)

    def put(self, y: int, x: int, block: np.ndarray) -> None:
        """Write block (h, w, 3) at level pixel (y, x); it must lie inside one tile."""
        t = self.tile
        ty, tx, oy, ox = y // t, x // t, y % t, x % t
        base = (ty * self.nx + tx) * t * t * 3
        for r, row in enumerate(block):
            os.pwrite(self.fd, row.tobytes(), base + ((oy + r) * t + ox) * 3)

    def tiles(self) -> Iterator[np.ndarray]:
        """Every tile in row-major order, clipped to the level's edges."""
        t = self.tile
        for ty in range(self.ny):
            for tx in range(self.nx):
                raw = os.pread(self.fd, t * t * 3, (ty * self.nx + tx) * t * t * 3)
                full = np.frombuffer(raw, np.uint8).reshape(t, t, 3)
                yield full[: min(t, self.height - ty * t), : min(t, self.width - tx * t)]

    def close(self) -> None:
        os.close(self.fd)


def _halve(t: np.ndarray) -> np.ndarray:
    """2x2 mean, (h, w, 3) -> (ceil(h/2), ceil(w/2), 3) uint8; odd edges replicated."""
    h, w = t.shape[:2]
    if h % 2 or w % 2:
        t = np.pad(t, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    a = t.astype(np.uint16)
    s = a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def _flatten(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """RGBA (non-premultiplied) over the background colour -> RGB uint8."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha[..., None].astype(np.float32) / 255.0
    out = rgb.astype(np.float32) * a + background * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _mpp(props) -> tuple[float, float] | None:
    try:
        return float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])
    except (KeyError, ValueError):
        return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__
