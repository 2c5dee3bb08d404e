"""Plain images: PNG and JPEG (Pillow), small non-tiled TIFF (tifffile).

Greyscale is read as float32 and remembers its file dtype in meta["plain_dtype"];
the writer returns to that dtype family:
- integer sources (uint8, uint16, int16, ...): values are rounded half-to-even
  (np.rint) and clipped to the dtype's range;
- float sources stay float32 (TIFF only: PNG cannot hold floats, UsageError).
RGB is read as uint8 RGB and written as uint8 RGB. Alpha (RGBA, or a palette with
transparency) that is not fully opaque is kept beside it in meta["alpha"] (Z, Y, X)
uint8 and written back, resized bicubically (clamped to 0-255) to the output's size.
A TIFF resolution in cm/mm/µm, or an OME-TIFF's PhysicalSizeX/Y, becomes the pixel
spacing in mm and is written back (scaled with the image): as resolution tags, and for
an OME-TIFF input also as OME-XML.

RGB(A) images of more than `plain_stream.STREAM_MIN_PIXELS` pixels are streamed by
`rat sr` instead (`ratcli.io.plain_stream`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ratcli.errors import InputFormatError, UsageError
from ratcli.io.atomic import atomic_output
from ratcli.io.checks import check_length, check_pixels, one_line
from ratcli.io.formats import Format
from ratcli.io.image import Domain, Image
from ratcli.io.plain_meta import ome_spacing_mm, pil_open, resize_alpha, tiff_spacing_mm
from ratcli.io.plain_stream import open_plain_stream, streams_plain, write_plain_tiles
from ratcli.io.provenance import describe_provenance

__all__ = ["read_plain", "FORMAT"]

_TIFF = (".tif", ".tiff")
_PNG = (".png",)
_PIL_READ = (".png", ".jpg", ".jpeg")
# Pillow modes that convert losslessly to the layout we keep.
_PIL_TO_GREY = {"1": "L", "LA": "L", "L": "L", "I;16": None, "I;16B": None, "I": None, "F": None}
_PIL_TO_RGB = {"RGB": "RGB", "RGBA": "RGB", "P": "RGB", "PA": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


def read_plain(path: str | Path, *, max_pixels: int | None = None) -> Image:
    """Read a PNG, JPEG or (non-tiled, small) TIFF.

    max_pixels: pixel limit (all pages together) checked on the header before decoding
    (None: RAT_MAX_PIXELS or `checks.DEFAULT_MAX_PIXELS`; 0: no limit).
    Returns Image with array (Z, Y, X) float32 (Z = pages of a multi-page TIFF) or
    (Z, Y, X, 3) uint8; spacing from a TIFF metric resolution, else 1 mm.
    Raises InputFormatError naming the file for corrupt, truncated or unsupported
    images (e.g. 16-bit colour, more than 3 dimensions); ImageTooLargeError over the limit.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in _TIFF:
        arr, axes, spacing_yx = _read_tiff(p, max_pixels)
    elif suffix in _PIL_READ:
        arr, axes, spacing_yx = _read_pil(p, max_pixels), None, None
    else:
        raise InputFormatError(f"{p}: not a PNG, JPEG or TIFF file")
    rgb = arr.ndim >= 3 and arr.shape[-1] in (3, 4) and (axes is None or axes.endswith("S"))
    meta: dict = {"format": "plain", "plain_dtype": str(arr.dtype)}
    if rgb:
        if arr.dtype != np.uint8:
            raise InputFormatError(f"{p}: {arr.dtype} colour is not supported (8-bit RGB only)")
        alpha = arr[..., 3] if arr.shape[-1] == 4 else None
        arr = arr[..., :3]
        array = arr[None] if arr.ndim == 3 else arr
        if alpha is not None and alpha.min() < 255:  # an opaque alpha carries nothing
            meta["alpha"] = np.ascontiguousarray(alpha[None] if alpha.ndim == 2 else alpha)
    else:
        array = arr[None] if arr.ndim == 2 else arr
    if array.ndim != (4 if rgb else 3) or min(array.shape[:3]) < 1:
        raise InputFormatError(f"{p}: unsupported image layout {arr.shape}")
    if axes is not None and axes.startswith("OME"):
        meta["ome"] = True
    sy, sx = spacing_yx if spacing_yx else (1.0, 1.0)
    if spacing_yx:
        meta["plain_resolution"] = True
    if not rgb:
        if arr.dtype.kind not in "uif" and arr.dtype != bool:
            raise InputFormatError(f"{p}: {arr.dtype} pixels are not supported")
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise InputFormatError(f"{p}: image holds NaN or infinite values")
    return Image(
        array=np.ascontiguousarray(array),
        spacing=(sx, sy, 1.0),
        domain=Domain.RGB8 if rgb else Domain.GREY,
        modality="OT",
        meta=meta,
        source=p,
    )


def write_plain(
    image: Image,
    path: str | Path,
    *,
    overwrite: bool = False,
    provenance: dict | None = None,
) -> Path:
    """Write `image` as PNG (one slice, 8/16-bit) or TIFF (pages = slices).

    The dtype follows meta["plain_dtype"] (see the module docstring); an image from
    another format is written as float32 TIFF, or for PNG as uint8/uint16 when its
    source dtype was one of those. provenance goes into the Software tag / text chunk.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in _TIFF + _PNG:
        raise UsageError(f"{out}: plain image output must be .png, .tif or .tiff")
    data = image.array if image.is_rgb else _to_file_dtype(image, out, png=suffix in _PNG)
    alpha = image.meta.get("alpha") if image.is_rgb else None
    if alpha is not None:  # RGBA: alpha brought to the output's size
        data = np.concatenate([data, _alpha_for(alpha, data.shape[:3])[..., None]], axis=-1)
    software = describe_provenance(provenance)
    inputs = [image.source] if image.source else []
    if suffix in _PNG:
        if image.num_slices != 1:
            raise UsageError(f"{out}: PNG holds one slice, image has {image.num_slices}; use .tif")
        with atomic_output(out, overwrite=overwrite, inputs=inputs) as tmp:
            _write_png(data[0], tmp, software=software)
        return out
    with atomic_output(out, overwrite=overwrite, inputs=inputs) as tmp:
        _write_tiff(image, data, tmp, software=software)
    return out


def _read_tiff(p: Path, max_pixels: int | None
               ) -> tuple[np.ndarray, str, tuple[float, float] | None]:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            axes = series.axes
            check_pixels(p, [n for n, a in zip(series.shape, axes, strict=True) if a != "S"],
                         max_pixels)
            check_length(p, have=tif.filehandle.size, need=_tiff_data_end(series),
                         what="the file")
            arr = series.asarray()
            page = tif.pages.first
            spacing = tiff_spacing_mm(page)
            if tif.is_ome:
                spacing = spacing or ome_spacing_mm(tif.ome_metadata)
                axes = "OME" + axes  # tells read_plain to keep the OME flag
    except InputFormatError:
        raise
    except Exception as exc:
        reason = one_line(exc, 200)
        raise InputFormatError(f"{p}: corrupt or unreadable TIFF ({reason})") from None
    # Collapse every non-spatial, non-sample axis into pages (Z).
    if axes.endswith("S"):
        arr = arr.reshape(-1, *arr.shape[-3:]) if arr.ndim > 3 else arr
    elif arr.ndim > 3:
        arr = arr.reshape(-1, *arr.shape[-2:])
    return arr, axes, spacing


def _tiff_data_end(series) -> int:
    """Byte offset just past the last strip or tile the series' headers point to."""
    end = 0
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes  # contiguous data (tifffile-written)
    for page in series.pages:
        if page is not None and hasattr(page, "dataoffsets"):
            end = max(end, *(o + c for o, c in zip(page.dataoffsets, page.databytecounts,
                                                   strict=True)), 0)
    return end


def _alpha_for(alpha: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """meta["alpha"] (Z, h, w) brought to the output's (Z, Y, X)."""
    if alpha.shape[0] != shape[0]:
        raise UsageError(f"alpha of {alpha.shape[0]} slices for an image of {shape[0]}")
    return np.stack([resize_alpha(a, shape[1], shape[2]) for a in alpha])


def _read_pil(p: Path, max_pixels: int | None) -> np.ndarray:
    try:
        with pil_open(p) as im:
            width, height = im.size
            check_pixels(p, (height, width), max_pixels)
            im.load()
            mode = im.mode
            if mode in ("RGBA", "PA") or (mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
            elif mode in _PIL_TO_RGB:
                im = im.convert("RGB")
            elif mode in _PIL_TO_GREY:
                target = _PIL_TO_GREY[mode]
                im = im.convert(target) if target and target != mode else im
            else:
                raise InputFormatError(f"{p}: unsupported pixel mode {mode}")
            arr = np.array(im)
    except InputFormatError:
        raise
    except Exception as exc:
        reason = one_line(exc, 200)
        what = "truncated" if "truncat" in reason.lower() else "corrupt or unreadable"
        raise InputFormatError(f"{p}: {what} image ({reason})") from None
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)  # Pillow's "I" mode for 16-bit PNGs
    return arr


def _to_file_dtype(image: Image, out: Path, *, png: bool) -> np.ndarray:
    """Greyscale float32 -> the array to store (dtype family of the source)."""
    name = image.meta.get("plain_dtype")
    dtype = np.dtype(name) if name else np.dtype(np.float32)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    if png and dtype not in (np.uint8, np.uint16):
        raise UsageError(f"{out}: PNG holds 8/16-bit unsigned integers, image is {dtype}; use .tif")
    if dtype.kind == "f":
        return image.array.astype(np.float32)
    info = np.iinfo(dtype)
    return np.clip(np.rint(image.array), info.min, info.max).astype(dtype)


def _write_png(data: np.ndarray, tmp: Path, *, software: str) -> None:
    from PIL import Image as PILImage
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", software)
    PILImage.fromarray(data).save(tmp, format="PNG", pnginfo=info)


def _write_tiff(image: Image, data: np.ndarray, tmp: Path, *, software: str) -> None:
    import tifffile

    kwargs: dict = {"metadata": None}
    sx, sy = image.spacing[:2]
    if image.meta.get("plain_resolution"):
        kwargs.update(resolution=(10.0 / sx, 10.0 / sy), resolutionunit="CENTIMETER")
    if data.shape[-1] == 4 and image.is_rgb:
        kwargs["extrasamples"] = ("unassalpha",)
    pages = data[0] if image.num_slices == 1 else data
    if image.meta.get("ome"):
        axes = ("" if image.num_slices == 1 else "Z") + ("YXS" if image.is_rgb else "YX")
        ome: dict = {"axes": axes, "Description": software}
        if image.meta.get("plain_resolution"):  # the spacing in µm, as OME says it
            ome.update(PhysicalSizeX=sx * 1000.0, PhysicalSizeXUnit="µm",
                       PhysicalSizeY=sy * 1000.0, PhysicalSizeYUnit="µm")
        kwargs.update(ome=True, metadata=ome)
    tifffile.imwrite(
        tmp,
        pages,
        photometric="rgb" if image.is_rgb else "minisblack",
        compression="zlib",
        software=software,
        **kwargs,
    )


# This format's entry in the table of formats (ratcli.io.formats).
FORMAT = Format(
    name="plain",
    kind="image",
    label="PNG/TIFF/JPEG",
    suffixes=(".png", ".tif", ".tiff", ".jpg", ".jpeg"),
    read=lambda source, max_pixels=None: read_plain(source.path, max_pixels=max_pixels),
    write=write_plain,
    output_suffix=lambda source: ".tif" if source.path.suffix.lower() in _TIFF else ".png",
    writes=_PNG + _TIFF,
    # big RGB(A) images go chunk by chunk, like slides (ratcli.io.plain_stream)
    open_stream=open_plain_stream,
    write_stream=write_plain_tiles,
    streams_source=streams_plain,
)
