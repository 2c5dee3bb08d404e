"""Plain images too large to restore whole, streamed like slides.

A flat TIFF (stripped or tiled, any compression tifffile decodes) is read band by band
from its strips or tiles (`TiffRegionReader`); a PNG or JPEG cannot be decoded in parts,
so it is decoded once into a uint8 array (3-4 bytes per pixel, no float copy) and the
work and the writing stream from it (`ArrayRegionReader`). Both offer the slide reader's
interface (`ratcli.io.wsi.RegionReader`), so `ratcli.inference.slide.restore_stream`
restores them chunk by chunk with the background on the cheap path.

Output (`write_plain_tiles`): a TIFF input gives a pyramidal tiled BigTIFF with lossless
(deflate) tiles, level 0 first, so any TIFF reader sees the full-size image and slide
viewers get the pyramid; a PNG or JPEG input gives a PNG written row by row. Alpha is
carried through (the fourth channel); an OME-TIFF input gives OME-XML with the scaled
physical pixel size, any other TIFF resolution tags.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ratcli.errors import InputFormatError, UsageError
from ratcli.io.atomic import atomic_output
from ratcli.io.checks import check_pixels, one_line
from ratcli.io.plain_meta import ome_spacing_mm, ome_xml, pil_open, tiff_spacing_mm
from ratcli.io.png_stream import write_png_rows
from ratcli.io.provenance import describe_provenance
from ratcli.io.wsi_pyramid import SLIDE_WRITER, PyramidWriter, SlideCompression, SlideWriterConfig

if TYPE_CHECKING:
    from ratcli.io.sources import Source

__all__ = [
    "STREAM_MIN_PIXELS",
    "streams_plain",
    "open_plain_stream",
    "write_plain_tiles",
    "TiffRegionReader",
    "ArrayRegionReader",
]

# Plain RGB(A) images with more pixels than this are streamed: below it the in-memory
# path's peak (about 0.5 GB at x2) is no larger than the streaming one.
STREAM_MIN_PIXELS = 1 << 20
_TIFF = (".tif", ".tiff")
_PIL_RGB_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr")
_BAND_ROWS = 512  # rows per band while a thumbnail is made


def streams_plain(source: Source) -> bool:
    """True when `source` is one 8-bit RGB(A) image of more than STREAM_MIN_PIXELS
    pixels (header only; anything else, or a file that does not open, is read whole,
    whose reader names the problem)."""
    p = source.path
    try:
        if p.suffix.lower() in _TIFF:
            import tifffile

            with tifffile.TiffFile(p) as tif:
                page = tif.pages.first
                return (len(tif.series) == 1 and len(tif.series[0].pages) == 1
                        and _tiff_rgb8(page) and page.imagedepth == 1
                        and page.imagelength * page.imagewidth > STREAM_MIN_PIXELS)
        with pil_open(p) as im:
            return (im.mode in _PIL_RGB_MODES and getattr(im, "n_frames", 1) == 1
                    and im.size[0] * im.size[1] > STREAM_MIN_PIXELS)
    except Exception:
        return False


def open_plain_stream(source: Source) -> TiffRegionReader | ArrayRegionReader:
    """The region reader of a streamed plain image (see `streams_plain`)."""
    p = source.path
    if p.suffix.lower() in _TIFF:
        return TiffRegionReader(p)
    return ArrayRegionReader(_decode_rgb(p), path=p)


class ArrayRegionReader:
    """Regions of an image decoded whole, (H, W, 3 or 4) uint8 (PNG/JPEG).

    width, height: size in pixels; mpp: None (PNG/JPEG carry no physical size rat keeps);
    channels: 3, or 4 with alpha; meta: what the writer needs ({}).
    """

    def __init__(self, array: np.ndarray, *, path: str | Path) -> None:
        self.path = Path(path)
        self._array = array
        self.height, self.width, self.channels = array.shape
        self.mpp: tuple[float, float] | None = None
        self.meta: dict = {}

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Region (h, w, channels) uint8 with its top-left corner at (x, y)."""
        return self._array[y : y + h, x : x + w].copy()

    def thumbnail(self, max_edge: int = 1024) -> np.ndarray:
        """The whole image as RGB, (h, w, 3) uint8, longest edge at most `max_edge`."""
        return _thumbnail(lambda y0, y1: self._array[y0:y1], self.height, self.width,
                          max_edge)

    def close(self) -> None:
        self._array = np.empty((0, 0, self.channels), np.uint8)

    def __enter__(self) -> ArrayRegionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TiffRegionReader:
    """Regions of a flat 8-bit RGB(A) TIFF, decoded from the strips or tiles they touch.

    Chunks are read band by band (a slide chunker asks for every chunk of a band with the
    same rows), so the reader decodes the rows of one band once, across the full width,
    and keeps them until a read needs other rows: memory is one band, whatever the image
    size. Uncompressed strips are read row by row, so one huge strip costs no more.

    width, height: size in pixels; mpp: (x, y) microns per pixel from the resolution
    tags or OME PhysicalSizeX/Y, else None; channels: 3, or 4 with alpha; meta:
    {"ome": True} for an OME-TIFF (the writer then writes OME-XML).
    """

    def __init__(self, path: str | Path) -> None:
        import tifffile

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            page = self._tif.pages.first
        except Exception as exc:
            raise InputFormatError(f"{self.path}: corrupt or unreadable TIFF "
                                   f"({one_line(exc, 200)})") from None
        if not _tiff_rgb8(page) or page.imagedepth != 1:
            self._tif.close()
            raise InputFormatError(f"{self.path}: streamed TIFFs are 8-bit RGB(A)")
        self._page = page
        self.height, self.width = page.imagelength, page.imagewidth
        self.channels = page.samplesperpixel
        self._planes = page.shaped[0]  # 1 (RGBRGB...) or samplesperpixel (separate)
        self._seg_h = page.tilelength if page.is_tiled else min(page.rowsperstrip, self.height)
        self._seg_w = page.tilewidth if page.is_tiled else self.width
        self._ny, self._nx = -(-self.height // self._seg_h), -(-self.width // self._seg_w)
        if len(page.dataoffsets) != self._planes * self._ny * self._nx:
            self._tif.close()
            raise InputFormatError(f"{self.path}: TIFF strip/tile table does not match "
                                   f"its {self.width}x{self.height} size")
        self.meta = {"ome": True} if self._tif.is_ome else {}
        mm = tiff_spacing_mm(page)
        if mm is None and self._tif.is_ome:
            mm = ome_spacing_mm(self._tif.ome_metadata)
        self.mpp = None if mm is None else (mm[1] * 1000.0, mm[0] * 1000.0)
        self._band: tuple[int, int, np.ndarray] | None = None

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Region (h, w, channels) uint8 with its top-left corner at (x, y)."""
        if self._band is None or not (self._band[0] <= y and y + h <= self._band[1]):
            self._band = None  # free the old band before decoding the next
            self._band = (y, y + h, self._rows(y, y + h))
        y0, _, band = self._band
        return band[y - y0 : y - y0 + h, x : x + w].copy()

    def thumbnail(self, max_edge: int = 1024) -> np.ndarray:
        """The whole image as RGB, (h, w, 3) uint8, longest edge at most `max_edge`
        (block means; one pass over the file, a band at a time)."""
        return _thumbnail(self._rows, self.height, self.width, max_edge)

    def close(self) -> None:
        self._band = None
        self._tif.close()

    def __enter__(self) -> TiffRegionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows [y0, y1) across the full width, (y1 - y0, W, channels) uint8."""
        page = self._page
        out = np.empty((y1 - y0, self.width, self.channels), np.uint8)
        try:
            if page.compression == 1 and not page.is_tiled:
                self._raw_rows(out, y0, y1)
            else:
                self._decoded_rows(out, y0, y1)
        except InputFormatError:
            raise
        except Exception as exc:
            raise InputFormatError(f"{self.path}: corrupt TIFF data in rows {y0} to {y1} "
                                   f"({one_line(exc, 200)})") from None
        return out

    def _raw_rows(self, out: np.ndarray, y0: int, y1: int) -> None:
        """Uncompressed strips: read just the rows asked for, by byte offset."""
        page, fh = self._page, self._tif.filehandle
        spp = self.channels // self._planes  # samples per pixel in one plane
        row_bytes = self.width * spp
        for plane in range(self._planes):
            for s in range(y0 // self._seg_h, (y1 - 1) // self._seg_h + 1):
                r0, r1 = max(y0, s * self._seg_h), min(y1, (s + 1) * self._seg_h)
                offset = page.dataoffsets[plane * self._ny + s]
                fh.seek(offset + (r0 - s * self._seg_h) * row_bytes)
                raw = fh.read((r1 - r0) * row_bytes)
                if len(raw) != (r1 - r0) * row_bytes:
                    raise InputFormatError(f"{self.path}: truncated TIFF (rows {r0} to {r1})")
                rows = np.frombuffer(raw, np.uint8).reshape(r1 - r0, self.width, spp)
                out[r0 - y0 : r1 - y0, :, plane * spp : (plane + 1) * spp] = rows

    def _decoded_rows(self, out: np.ndarray, y0: int, y1: int) -> None:
        """Compressed strips or tiles: decode every segment the rows touch."""
        page, fh = self._page, self._tif.filehandle
        spp = self.channels // self._planes
        index = [(p * self._ny + ty) * self._nx + tx
                 for p in range(self._planes)
                 for ty in range(y0 // self._seg_h, (y1 - 1) // self._seg_h + 1)
                 for tx in range(self._nx)]
        offsets = [page.dataoffsets[i] for i in index]
        counts = [page.databytecounts[i] for i in index]
        kwargs = {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader,
                  "_fullsize": page.is_tiled}
        for data, i in fh.read_segments(offsets, counts, indices=index, sort=True):
            seg, (plane, _, sy, sx, _), _ = page.decode(data, i, **kwargs)
            sh, sw = min(self._seg_h, self.height - sy), min(self._seg_w, self.width - sx)
            r0, r1 = max(y0, sy), min(y1, sy + sh)
            dst = out[r0 - y0 : r1 - y0, sx : sx + sw, plane * spp : (plane + 1) * spp]
            if seg is None:  # an empty segment (offset 0): TIFF says zeros
                dst[:] = 0
            else:
                dst[:] = seg[0, r0 - sy : r1 - sy, :sw]


def write_plain_tiles(
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
    """The streaming writer of plain images: level-0 tiles (row-major, `slide_writer`
    tile edge, 3 or 4 channels, clipped at the right and bottom) -> `path`, atomically.

    .png: one PNG, written a row of tiles at a time (provenance in its Software text).
    .tif/.tiff: a pyramidal tiled BigTIFF with lossless tiles (the input was a flat,
    usually lossless, TIFF) in `slide_writer`'s tile edge; mpp ((x, y) microns) goes
    into the resolution tags, and with meta {"ome": True} also into OME-XML
    PhysicalSizeX/Y (provenance then in the OME Description).
    Returns the (height, width) of every level written.
    """
    out = Path(path)
    first, tiles = _peek(iter(tiles))
    channels = 3 if first is None else first.shape[-1]
    suffix = out.suffix.lower()
    with atomic_output(out, overwrite=overwrite, inputs=list(inputs)) as tmp:
        if suffix == ".png":
            write_png_rows(tmp, tiles, width=width, height=height, channels=channels,
                           tile_px=slide_writer.tile_px,
                           software=describe_provenance(provenance))
            return [(height, width)]
        if suffix not in _TIFF:
            raise UsageError(f"{out}: streamed plain output must be .png, .tif or .tiff")
        config = replace(slide_writer, compression=SlideCompression.LOSSLESS)
        description: str | bytes = describe_provenance(provenance)
        if (meta or {}).get("ome"):
            description = ome_xml(height, width, channels, mpp, str(description))
        return PyramidWriter(tmp, width=width, height=height, config=config, mpp=mpp,
                             description=description, channels=channels).write(tiles)


def _tiff_rgb8(page) -> bool:
    """An 8-bit RGB(A) page (JPEG-compressed YCbCr is decoded to RGB by tifffile)."""
    return (page.dtype == np.uint8 and page.samplesperpixel in (3, 4)
            and page.photometric in (2, 6))


def _thumbnail(rows, height: int, width: int, max_edge: int) -> np.ndarray:
    """Block-mean thumbnail of an image given by rows(y0, y1) -> (n, W, C) uint8."""
    f = max(1, math.ceil(max(height, width) / max_edge))
    th, tw = -(-height // f), -(-width // f)
    thumb = np.empty((th, tw, 3), np.uint8)
    step = f * max(1, _BAND_ROWS // f)
    for y0 in range(0, height, step):
        band = rows(y0, min(height, y0 + step))[..., :3]
        n = band.shape[0]
        pad = ((0, -n % f), (0, -width % f), (0, 0))
        if any(p[1] for p in pad):
            band = np.pad(band, pad, mode="edge")
        blocks = band.reshape(band.shape[0] // f, f, band.shape[1] // f, f, 3)
        thumb[y0 // f : y0 // f + blocks.shape[0]] = blocks.mean(axis=(1, 3)).round()
    return thumb


def _peek(it: Iterator[np.ndarray]) -> tuple[np.ndarray | None, Iterator[np.ndarray]]:
    """(first item or None, an iterator that still yields it)."""
    first = next(it, None)
    if first is None:
        return None, iter(())

    def chained() -> Iterator[np.ndarray]:
        yield first
        yield from it

    return first, chained()


def _decode_rgb(p: Path) -> np.ndarray:
    """A PNG/JPEG decoded whole: (H, W, 3) uint8, or (H, W, 4) when it has alpha that is
    not fully opaque (as `ratcli.io.plain` reads it)."""
    try:
        with pil_open(p) as im:
            check_pixels(p, (im.size[1], im.size[0]), None)
            im.load()
            alpha = im.mode in ("RGBA", "PA") or (im.mode == "P" and "transparency" in im.info)
            mode = "RGBA" if alpha else "RGB"
            arr = np.asarray(im if im.mode == mode else im.convert(mode))  # one copy
    except InputFormatError:
        raise
    except Exception as exc:
        raise InputFormatError(f"{p}: corrupt or unreadable image ({one_line(exc, 200)})"
                               ) from None
    if alpha and arr[..., 3].min() == 255:  # an opaque alpha carries nothing
        arr = np.ascontiguousarray(arr[..., :3])
    return arr
