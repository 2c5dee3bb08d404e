"""What plain images carry besides pixels, shared by the whole-image reader/writer
(`ratcli.io.plain`) and the streaming one (`ratcli.io.plain_stream`): the physical pixel
size (TIFF resolution tags, OME-XML), alpha resizing, and Pillow's header-only open."""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["tiff_spacing_mm", "ome_spacing_mm", "ome_xml", "pil_open", "resize_alpha"]

# Pillow's own bomb guard is a module global; it is switched off (under this lock) while
# a file is opened, because rat's pixel limit, checked right after, replaces it.
_PIL_GUARD = threading.Lock()


def tiff_spacing_mm(page) -> tuple[float, float] | None:
    """(y, x) pixel spacing in mm from a metric resolution tag, else None."""
    import tifffile

    unit = page.resolutionunit
    if unit not in (tifffile.RESUNIT.CENTIMETER, tifffile.RESUNIT.MILLIMETER,
                    tifffile.RESUNIT.MICROMETER):
        return None
    rx, ry = page.get_resolution(tifffile.RESUNIT.MILLIMETER)
    if not (rx > 0 and ry > 0):
        return None
    return 1.0 / ry, 1.0 / rx


def ome_spacing_mm(xml: str | None) -> tuple[float, float] | None:
    """(y, x) pixel spacing in mm from the first OME Image's PhysicalSizeY/X, else None."""
    if not xml:
        return None
    pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", xml)
    if pixels is None:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0)))
    per_mm = {"m": 1e3, "cm": 10.0, "mm": 1.0, "µm": 1e-3, "um": 1e-3, "\u03bcm": 1e-3,
              "nm": 1e-6}
    try:
        yx = tuple(float(attrs[f"PhysicalSize{a}"]) * per_mm[attrs.get(f"PhysicalSize{a}Unit",
                                                                      "µm")]
                   for a in ("Y", "X"))
    except (KeyError, ValueError):
        return None
    return yx if yx[0] > 0 and yx[1] > 0 else None  # type: ignore[return-value]


@contextmanager
def pil_open(p: Path) -> Iterator:
    """The Pillow image of `p`, header read only (rat's own pixel limit replaces Pillow's
    bomb guard, so that is off while the header is read)."""
    from PIL import Image as PILImage

    with _PIL_GUARD, warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        saved, PILImage.MAX_IMAGE_PIXELS = PILImage.MAX_IMAGE_PIXELS, None
        try:
            im = PILImage.open(p)
        finally:
            PILImage.MAX_IMAGE_PIXELS = saved
    with im:
        yield im


def resize_alpha(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) uint8 alpha -> (height, width) uint8, bicubic (Pillow clamps to 0-255); the
    slide chunker resizes each chunk's alpha with it, so streamed and whole agree."""
    from PIL import Image as PILImage

    if alpha.shape == (height, width):
        return alpha
    return np.asarray(PILImage.fromarray(np.ascontiguousarray(alpha)).resize(
        (width, height), PILImage.Resampling.BICUBIC))


def ome_xml(height: int, width: int, channels: int, mpp: tuple[float, float] | None,
            description: str) -> bytes:
    """OME-XML (UTF-8: TIFF ASCII tags cannot say µm) of level 0 (one image, IFD 0):
    size, physical pixel size in µm, `description` (provenance) as its Description."""
    import tifffile

    physical = {} if mpp is None else {
        "PhysicalSizeX": mpp[0], "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": mpp[1], "PhysicalSizeYUnit": "µm"}
    ome = tifffile.OmeXml(Creator="rat")
    ome.addimage(np.uint8, (height, width, channels), (1, 1, 1, height, width, channels),
                 axes="YXS", Description=description, **physical)
    return ome.tostring().encode("utf-8")
