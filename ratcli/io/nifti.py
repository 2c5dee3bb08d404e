"""NIfTI (.nii, .nii.gz) reader and writer through SimpleITK.

Geometry is SimpleITK's (LPS, the NIfTI RAS matrix converted by ITK). When the
output grid is the input grid, the input's qform/sform header fields are copied into
the output verbatim (`nifti_header.copy_geometry`), so spacing, origin and direction
read back exactly as they were, not merely to float32 precision.
Greyscale is read as float32 and written as float32 (a restored image is not integer;
this also keeps denoised CT/PET values exactly). 3-component uint8 vectors are RGB.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ratcli.errors import InputFormatError, OutputNotWritableError, UsageError
from ratcli.io.atomic import atomic_output
from ratcli.io.checks import check_length, check_pixels, one_line
from ratcli.io.formats import Format
from ratcli.io.image import Domain, Image
from ratcli.io.nifti_header import COMPLEX_TYPES, copy_geometry, read_header, scan_voxels
from ratcli.io.provenance import describe_provenance

__all__ = ["read_nifti", "FORMAT"]

# ITK writes this metadata key into the 80-character NIfTI `descrip` field.
_DESCRIP_KEY = "ITK_FileNotes"


def read_nifti(path: str | Path, *, max_pixels: int | None = None) -> Image:
    """Read a 2D or 3D NIfTI file.

    max_pixels: voxel limit checked on the header before reading (None: RAT_MAX_PIXELS
    or `checks.DEFAULT_MAX_PIXELS`; 0: no limit), ImageTooLargeError above it.
    Returns Image with array (Z, Y, X) float32 (Z = 1 for 2D) or (Z, Y, X, 3) uint8,
    spacing/origin/direction from the header (a 2D image gets z spacing 1, origin z 0,
    and its 2x2 direction embedded in a 3x3 identity), and meta["nifti_ndim"] = 2 or 3
    so the writer gives back the same dimensionality.
    Raises InputFormatError for unreadable files, voxel data shorter than the header
    says (a cut-short .nii, a truncated or corrupt .nii.gz), complex voxels, 4D+
    images, non-RGB vector pixels, and NaN or infinite voxels (named with their count).
    """
    import SimpleITK as sitk

    p = Path(path)
    header = read_header(p)
    if header is None:
        raise InputFormatError(f"{p}: not a NIfTI file (no valid NIfTI header)")
    if header.datatype in COMPLEX_TYPES:
        raise InputFormatError(f"{p}: complex-valued NIfTI ({COMPLEX_TYPES[header.datatype]}) "
                               "is not a restorable image; save its magnitude as real values")
    check_pixels(p, header.shape[::-1], max_pixels)
    # Before ITK reads it: ITK fills missing voxels with 0 and drops NaN/inf.
    try:
        present, bad = scan_voxels(p, header)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        reason = one_line(exc)
        raise InputFormatError(f"{p}: truncated or corrupt compressed NIfTI ({reason})") from None
    except OSError as exc:
        raise InputFormatError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if header.data_bytes is not None:
        check_length(p, have=present, need=header.data_bytes, what="voxel data")
    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise InputFormatError(f"{p}: not a readable NIfTI file ({_itk_reason(exc)})") from None
    ndim = img.GetDimension()
    if ndim not in (2, 3):
        raise InputFormatError(f"{p}: {ndim}D NIfTI is not supported (2D or 3D only)")
    ncomp = img.GetNumberOfComponentsPerPixel()
    arr = sitk.GetArrayFromImage(img)
    if ndim == 2:
        arr = arr[None]
    if ncomp == 3 and arr.dtype == np.uint8:
        domain = Domain.RGB8
    elif ncomp == 1:
        domain = Domain.GREY
        arr = arr.astype(np.float32, copy=False)
        # Counted from the raw bytes: ITK < 6 turns NaN/inf into 0 while reading.
        bad = bad or int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise InputFormatError(f"{p}: {bad} voxels are NaN or infinite")
    else:
        raise InputFormatError(f"{p}: {ncomp}-component {arr.dtype} pixels are not supported")
    spacing, origin, direction = _geometry_3d(img)
    return Image(
        array=np.ascontiguousarray(arr),
        spacing=spacing,
        origin=origin,
        direction=direction,
        domain=domain,
        modality="OT",
        meta={
            "format": "nifti",
            "nifti_ndim": ndim,
            "nifti_header": header if header.version == 1 else None,
            "nifti_grid": (arr.shape[:3], spacing, origin, direction),
        },
        source=p,
    )


def write_nifti(
    image: Image,
    path: str | Path,
    *,
    overwrite: bool = False,
    provenance: dict | None = None,
) -> Path:
    """Write `image` to .nii or .nii.gz (compression follows the suffix).

    Greyscale as float32, RGB as a 3-vector uint8 image; spacing, origin and direction
    as in the Image. A single-slice image read from a 2D file is written as 2D.
    provenance goes into the 80-character `descrip` header field.
    """
    import SimpleITK as sitk

    out = Path(path)
    arr = image.array
    two_d = image.num_slices == 1 and image.meta.get("nifti_ndim") == 2
    if two_d and not _is_plain_2d(image):
        raise UsageError(f"{out}: 2D NIfTI output needs an in-plane direction; write 3D")
    data = arr[0] if two_d else arr
    if image.is_rgb:
        img = sitk.GetImageFromArray(data, isVector=True)
    else:
        img = sitk.GetImageFromArray(np.asarray(data, dtype=np.float32))
    d = np.asarray(image.direction, dtype=float).reshape(3, 3)
    if two_d:
        img.SetSpacing(tuple(float(v) for v in image.spacing[:2]))
        img.SetOrigin(tuple(float(v) for v in image.origin[:2]))
        img.SetDirection(tuple(float(v) for v in d[:2, :2].ravel()))
    else:
        img.SetSpacing(tuple(float(v) for v in image.spacing))
        img.SetOrigin(tuple(float(v) for v in image.origin))
        img.SetDirection(tuple(float(v) for v in d.ravel()))
    img.SetMetaData(_DESCRIP_KEY, describe_provenance(provenance, limit=79))
    inputs = [image.source] if image.source else []
    header = _source_header(image)
    try:
        with atomic_output(out, overwrite=overwrite, inputs=inputs) as tmp:
            gz = out.name.lower().endswith(".gz")
            if not gz or header is not None:  # an uncompressed file is written first
                _check_free_space(out, 352 + data.size * (1 if image.is_rgb else 4))
            if header is None:
                sitk.WriteImage(img, str(tmp), useCompression=gz)
                _check_complete(tmp, out)
                return out
            raw = tmp.with_name(tmp.name + ".raw.nii")
            try:
                sitk.WriteImage(img, str(raw), useCompression=False)
                _check_complete(raw, out)
                os.replace(copy_geometry(header, raw, out.name), tmp)
            finally:
                raw.unlink(missing_ok=True)
                raw.with_name(raw.name + ".gz").unlink(missing_ok=True)
    except RuntimeError as exc:
        # ITK reports a failed write (disk full, quota) as RuntimeError; the temp is gone.
        raise OutputNotWritableError(f"{out}: cannot write ({_itk_reason(exc)})") from None
    return out


def _check_free_space(out: Path, need: int) -> None:
    """Refuse before writing when the folder has less free space than the data needs
    (ITK's NIfTI writer only prints a short write to stderr)."""
    import shutil

    try:
        free = shutil.disk_usage(out.parent).free
    except OSError:
        return
    if free < need:
        raise OutputNotWritableError(f"{out}: cannot write: No space left on device "
                                     f"({need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free)")


def _check_complete(written: Path, out: Path) -> None:
    """OutputNotWritableError unless `written` holds all the voxels its header promises:
    ITK reports a short write (disk full, quota) on stderr and then returns normally."""
    header = read_header(written)
    try:
        present = scan_voxels(written, header, nonfinite=False)[0] if header else -1
    except (EOFError, zlib.error, OSError):
        present = -1
    if header is None or header.data_bytes is None or present < header.data_bytes:
        raise OutputNotWritableError(f"{out}: cannot write: the file came out incomplete "
                                     "(disk full or over quota?)")


def _source_header(image: Image):
    """The source NIfTI-1 header when the image still has exactly the source grid."""
    header = image.meta.get("nifti_header")
    grid = image.meta.get("nifti_grid")
    now = (image.array.shape[:3], image.spacing, image.origin, image.direction)
    return header if header is not None and grid == now else None


def _geometry_3d(img) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, direction) as 3D, embedding a 2D image's geometry."""
    if img.GetDimension() == 3:
        return tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection())
    sx, sy = img.GetSpacing()
    ox, oy = img.GetOrigin()
    a, b, c, d = img.GetDirection()
    return (sx, sy, 1.0), (ox, oy, 0.0), (a, b, 0.0, c, d, 0.0, 0.0, 0.0, 1.0)


def _is_plain_2d(image: Image) -> bool:
    """True when the 3D geometry is a 2D one embedded (z axis untouched)."""
    d = np.asarray(image.direction, dtype=float).reshape(3, 3)
    return bool(np.allclose(d[2, :2], 0) and np.allclose(d[:2, 2], 0) and abs(d[2, 2]) == 1.0)


def _itk_reason(exc: RuntimeError) -> str:
    """The useful last line of an ITK exception (they span many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "unknown error"


# This format's entry in the table of formats (ratcli.io.formats).
FORMAT = Format(
    name="nifti",
    kind="nifti",
    label="NIfTI",
    suffixes=(".nii.gz", ".nii"),
    read=lambda source, max_pixels=None: read_nifti(source.path, max_pixels=max_pixels),
    write=write_nifti,
    output_suffix=lambda source: ".nii.gz" if source.path.name.lower().endswith(".gz")
    else ".nii",
    writes=(".nii", ".nii.gz"),
)
