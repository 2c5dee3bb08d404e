"""Whole-slide images: level-0 regions through OpenSlide (`SlideReader`, the streaming
reader) and pyramidal tiled BigTIFF output (`write_slide_tiles`, the streaming writer;
the pyramid itself is built by `ratcli.io.wsi_pyramid`).

Slides are the one format too large to read whole: `read_slide` / `write_slide` serve
slides that fit in memory, and `rat sr` streams them chunk by chunk through
`ratcli.io.open_stream` / `ratcli.io.write_stream` (see `ratcli.inference.slide`).
Every output pyramid uses one layout, `SLIDE_WRITER`, unless the caller passes another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ratcli.errors import InputFormatError, UsageError
from ratcli.io.atomic import atomic_output
from ratcli.io.checks import one_line
from ratcli.io.formats import Format
from ratcli.io.image import Domain, Image
from ratcli.io.provenance import describe_provenance
from ratcli.io.wsi_pyramid import (
    SLIDE_WRITER,
    PyramidWriter,
    SlideCompression,
    SlideWriterConfig,
    pyramid_shapes,
    slide_tiles,
)

__all__ = [
    "RegionReader",
    "SlideReader",
    "read_slide",
    "write_slide_tiles",
    "FORMAT",
    # re-exported from wsi_pyramid, where the pyramid is built
    "PyramidWriter",
    "SlideCompression",
    "SlideWriterConfig",
    "SLIDE_WRITER",
    "pyramid_shapes",
    "slide_tiles",
]


class RegionReader(Protocol):
    """What the streaming restoration (`ratcli.inference.slide`) reads from: a slide
    (`SlideReader`) or a big plain image (`ratcli.io.plain_stream`).

    width, height: level-0 size in pixels; mpp: (x, y) microns per pixel or None;
    channels: 3 (RGB) or 4 (RGB + alpha); meta: what the matching writer needs.
    """

    path: Path
    width: int
    height: int
    mpp: tuple[float, float] | None
    channels: int
    meta: dict

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Level-0 region (h, w, channels) uint8 with its top-left corner at (x, y)."""
        ...

    def thumbnail(self, max_edge: int = 1024) -> np.ndarray:
        """The whole image as RGB, (h, w, 3) uint8, longest edge at most `max_edge`."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> RegionReader: ...

    def __exit__(self, *exc: object) -> None: ...


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
                                   f"({one_line(exc)})") from None
        self.width, self.height = self._slide.dimensions
        props = self._slide.properties
        self.properties = dict(props)
        self.mpp = _mpp(props)
        self.channels, self.meta = 3, {}  # RegionReader: RGB, nothing for the writer
        bg = props.get("openslide.background-color", "FFFFFF")
        self._background = np.array([int(bg[i : i + 2], 16) for i in (0, 2, 4)], np.float32)

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Level-0 region (h, w, 3) uint8 with its top-left corner at (x, y)."""
        import openslide

        try:
            rgba = np.asarray(self._slide.read_region((x, y), 0, (w, h)))
        except openslide.OpenSlideError as exc:
            raise InputFormatError(f"{self.path}: corrupt slide data in the region at "
                                   f"({x}, {y}) ({one_line(exc)})") from None
        return _flatten(rgba, self._background)

    def thumbnail(self, max_edge: int = 1024) -> np.ndarray:
        """The whole slide, (h, w, 3) uint8, longest edge at most `max_edge`."""
        import openslide

        try:
            im = self._slide.get_thumbnail((max_edge, max_edge))
        except openslide.OpenSlideError as exc:
            # OpenSlide reads the thumbnail from a low-resolution level: a bad tile there
            raise InputFormatError(f"{self.path}: corrupt slide data in a low-resolution "
                                   f"level ({one_line(exc)})") from None
        return np.asarray(im.convert("RGB"))

    def close(self) -> None:
        self._slide.close()

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Largest slide read whole into memory (RGB uint8: 768 MB).
_IN_MEMORY_SLIDE_PIXELS = 1 << 28


def read_slide(path: str | Path, *, max_pixels: int | None = None) -> Image:
    """A whole slide's level 0 in memory: Image (1, H, W, 3) uint8, spacing in mm
    (MPP / 1000), meta {"format": "slide", "mpp": (x, y) | None, "properties": {...}}.

    Only for slides that fit in memory (`max_pixels`, default 2^28 pixels); `rat sr`
    streams instead (ratcli.inference.slide)."""
    with SlideReader(path) as r:
        if r.width * r.height > (max_pixels or _IN_MEMORY_SLIDE_PIXELS):
            raise InputFormatError(f"{r.path}: slide of {r.width}x{r.height} pixels is too "
                                   "large to read into memory; restore it with `rat sr`")
        rgb = r.read(0, 0, r.width, r.height)
        mm = (1.0, 1.0) if r.mpp is None else (r.mpp[0] / 1000.0, r.mpp[1] / 1000.0)
        return Image(rgb[None], spacing=(mm[0], mm[1], 1.0), domain=Domain.RGB8,
                     modality="SM", source=r.path,
                     meta={"format": "slide", "mpp": r.mpp, "properties": r.properties})


def write_slide(image: Image, path: str | Path, *, overwrite: bool = False,
                provenance: dict | None = None,
                slide_writer: SlideWriterConfig = SLIDE_WRITER) -> Path:
    """Write an in-memory RGB image (first slice) as a pyramidal tiled BigTIFF,
    atomically. MPP comes from image.spacing (mm) when meta["mpp"] was set."""
    if not image.is_rgb:
        raise UsageError(f"{path}: slide output is RGB; this image is greyscale")
    rgb = image.array[0]
    mpp = None
    if image.meta.get("mpp") is not None:
        mpp = (image.spacing[0] * 1000.0, image.spacing[1] * 1000.0)
    write_slide_tiles(slide_tiles(rgb, slide_writer.tile_px), path, width=rgb.shape[1],
                      height=rgb.shape[0], mpp=mpp, overwrite=overwrite,
                      provenance=provenance,
                      inputs=[image.source] if image.source is not None else [],
                      slide_writer=slide_writer)
    return Path(path)


def write_slide_tiles(
    tiles: Iterable[np.ndarray],
    path: str | Path,
    *,
    width: int,
    height: int,
    mpp: tuple[float, float] | None = None,
    overwrite: bool = False,
    provenance: dict | None = None,
    inputs: Sequence[str | Path] = (),
    slide_writer: SlideWriterConfig = SLIDE_WRITER,
    meta: dict | None = None,
) -> list[tuple[int, int]]:
    """The streaming slide writer: level-0 tiles (row-major, `slide_writer.tile_px`
    edge, clipped at the right and bottom) -> a pyramidal tiled BigTIFF at `path`,
    which appears atomically (an existing one is refused unless overwrite; `inputs`
    are never overwritten). width, height: level-0 size in pixels; mpp: (x, y)
    microns per pixel or None; provenance goes into level 0's ImageDescription; meta:
    the reader's (nothing a slide output needs). Returns the (height, width) of every
    level written."""
    with atomic_output(path, overwrite=overwrite, inputs=list(inputs)) as tmp:
        return PyramidWriter(tmp, width=width, height=height, config=slide_writer, mpp=mpp,
                             description=describe_provenance(provenance)).write(tiles)


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


def _is_slide(path: Path) -> bool:
    from ratcli.io.inputs import is_tiled_pyramid

    return is_tiled_pyramid(path)


# This format's entry in the table of formats (ratcli.io.formats).
FORMAT = Format(
    name="slide",
    kind="slide",
    label="whole-slide",
    suffixes=(".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".bif"),
    read=lambda source, max_pixels=None: read_slide(source.path, max_pixels=max_pixels),
    write=write_slide,
    output_suffix=".tif",
    writes=(".tif", ".tiff"),
    sniff=_is_slide,  # a tiled TIFF pyramid (or one larger than a plain image)
    own_images_only=True,
    open_stream=lambda source: SlideReader(source.path),
    write_stream=write_slide_tiles,
)
