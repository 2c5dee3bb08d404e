"""File I/O: find inputs, read any supported file into an `Image`, write it back.

    sources = find_inputs(Path("scans/"))      # files, DICOM series, slides
    image = read(sources[0])                   # Image (Z, Y, X) + geometry
    write(restored, out_path, provenance={...}) # format from the suffix, atomic

Formats live in one table (`ratcli.io.formats`): each format module (DICOM `dicom` +
`dicom_derived`, NIfTI `nifti`, PNG/JPEG/TIFF `plain`, whole-slide images `wsi`)
declares its kind, suffixes, reader, writer and output suffix, and `read`, `write` and
input discovery look formats up there. Heavy libraries (pydicom, SimpleITK, tifffile,
Pillow, OpenSlide) are imported only when their format is used.

Whole slides are also streamed, never held whole in memory:

    if streams(source):
        with open_stream(source) as reader:       # .width, .height, .mpp, .read(x, y, w, h)
            write_stream(tiles, out_path, width=..., height=..., mpp=...)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ratcli.errors import InputFormatError, UsageError
from ratcli.io.atomic import atomic_output
from ratcli.io.dicom_geometry import check_one_grid
from ratcli.io.formats import (
    Format,
    all_formats,
    format_for,
    format_of_kind,
    input_suffixes,
    output_suffix_for,
    output_suffixes,
    register,
    unregister,
    writer_for,
)
from ratcli.io.image import Domain, Image
from ratcli.io.sources import (
    Source,
    find_inputs,
    is_dicom_file,
    is_slide,
    output_path_for,
)
from ratcli.io.wsi_pyramid import SLIDE_WRITER, SlideWriterConfig

__all__ = [
    "Image",
    "Domain",
    "Source",
    "Format",
    "find_inputs",
    "read",
    "write",
    "check_geometry_fits",
    "streams",
    "open_stream",
    "write_stream",
    "register",
    "unregister",
    "format_for",
    "input_suffixes",
    "output_suffixes",
    "output_suffix_for",
    "output_path_for",
    "is_slide",
    "is_dicom_file",
    "atomic_output",
    "SlideWriterConfig",
    "SLIDE_WRITER",
]


def read(source: Source | str | Path, *, max_pixels: int | None = None) -> Image:
    """Read one input (a Source from find_inputs, or a path that holds exactly one
    image or series) into an Image. Errors are RatErrors naming the file.
    max_pixels: refuse images larger than this before decoding them (None: the
    environment variable RAT_MAX_PIXELS, else io.checks.DEFAULT_MAX_PIXELS; 0: no limit)."""
    source = _one_source(source)
    return format_of_kind(source.kind, where=source.path).read(source, max_pixels=max_pixels)


def write(
    image: Image,
    path: str | Path,
    *,
    overwrite: bool = False,
    provenance: dict | None = None,
) -> Path:
    """Write `image` to `path`, picking the format from the suffix (`formats.writer_for`).

    .nii/.nii.gz: NIfTI. .png/.tif/.tiff: plain image (a slide image, meta format
    "slide", goes to the pyramidal slide writer as .tif/.tiff). .dcm, or a path without
    one of these suffixes for an image read from DICOM: a derived DICOM instance /
    series folder. The output appears atomically; an existing one is refused unless
    overwrite. provenance: {"task": ..., "weights": name, "weights_sha256": hex}
    recorded in the file (DICOM DerivationDescription, NIfTI descrip, PNG/TIFF Software).
    Returns the path written.
    """
    out = Path(path)
    check_geometry_fits(image, out)
    return writer_for(image, out).write(image, out, overwrite=overwrite, provenance=provenance)


def check_geometry_fits(image: Image, path: str | Path) -> None:
    """Raise GeometryMismatchError when `path`'s format cannot hold `image`'s slice
    positions: a DICOM series with uneven gaps or a gantry-tilt shear to NIfTI, which
    stores one regular grid. Cheap, on the input image: callers check before inference."""
    out = Path(path)
    if writer_for(image, out).name == "nifti":
        check_one_grid(image, out)


def streams(source: Source) -> bool:
    """True when `source` is read and written in chunks (whole slides, big RGB plain
    images), not whole."""
    fmt = format_of_kind(source.kind, where=source.path)
    return fmt.open_stream is not None and (fmt.streams_source is None
                                            or fmt.streams_source(source))


def open_stream(source: Source | str | Path) -> Any:
    """The streaming reader of a slide or big plain image (`ratcli.io.wsi.RegionReader`):
    a context manager with width, height (level-0 pixels), mpp ((x, y) microns or None),
    channels (3, or 4 with alpha), meta, read(x, y, w, h) -> (h, w, channels) uint8 and
    thumbnail(max_edge) -> (h, w, 3) uint8.
    Raises UsageError for a source that is not streamed (read it whole with `read`)."""
    source = _one_source(source)
    fmt = format_of_kind(source.kind, where=source.path)
    if fmt.open_stream is None:
        raise UsageError(f"{source.path}: {fmt.label} inputs are read whole; use io.read")
    return fmt.open_stream(source)


def write_stream(
    tiles: Iterable[np.ndarray],
    path: str | Path,
    *,
    width: int,
    height: int,
    mpp: tuple[float, float] | None = None,
    overwrite: bool = False,
    provenance: dict | None = None,
    inputs: Iterable[str | Path] = (),
    slide_writer: SlideWriterConfig = SLIDE_WRITER,
    source: Source | None = None,
    meta: dict | None = None,
) -> list[tuple[int, int]]:
    """The streaming writer: level-0 RGB(A) tiles of `slide_writer.tile_px` edge in
    row-major order (clipped at the right and bottom) -> a pyramid at `path`, written
    atomically. The format that read `source` writes it (a flat TIFF's pyramid is
    lossless, a slide's JPEG), else the first streamed format that writes the suffix;
    meta: the reader's meta (e.g. {"ome": True}). Returns the (height, width) of every
    level (see wsi.write_slide_tiles). Raises UsageError when that format does not
    write the path's suffix."""
    out = Path(path)
    own = None if source is None else format_of_kind(source.kind, where=source.path)
    formats = [own] if own is not None and own.write_stream is not None else _streamed()
    fmt = next((f for f in formats if out.name.lower().endswith(f.writes)), None)
    if fmt is None:
        known = ", ".join(s for f in formats for s in f.writes)
        raise UsageError(f"{out}: streamed output must be one of {known}")
    return fmt.write_stream(tiles, out, width=width, height=height, mpp=mpp,
                            overwrite=overwrite, provenance=provenance, inputs=list(inputs),
                            slide_writer=slide_writer, meta=meta)


def _one_source(source: Source | str | Path) -> Source:
    if isinstance(source, Source):
        return source
    path = Path(source)
    if path.is_file() and is_dicom_file(path):
        # a DICOM file named on its own is read whatever object it is (a secondary capture
        # too): skipping non-scans is the batch runner's rule, not the reader's
        return Source(path, (path,), "dicom", Path(path.name))
    found = find_inputs(source)
    if len(found) != 1:
        raise InputFormatError(
            f"{source}: holds {len(found)} images or series; read each one from find_inputs()"
        )
    return found[0]


def _streamed() -> list[Format]:
    return [f for f in all_formats() if f.write_stream is not None]
