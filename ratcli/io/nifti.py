"""NIfTI (.nii, .nii.gz) reader and writer through SimpleITK.

Geometry is SimpleITK's (LPS, the NIfTI RAS matrix converted by ITK). When the
output grid is the input grid, the input's qform/sform header fields are copied into
the output verbatim (`nifti_header.copy_geometry`), so spacing, origin and direction
read back exactly as they were, not merely to float32 precision.
Greyscale is read as float32 and written as float32 (a restored image is not integer;
this also keeps denoised CT/PET values exactly). 3-component uint8 vectors are RGB.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ratcli.errors import InputFormatError, UsageError
from ratcli.io.atomic import atomic_output
from ratcli.io.formats import Format
from ratcli.io.image import Domain, Image
from ratcli.io.nifti_header import copy_geometry, count_nonfinite, read_header
from ratcli.io.provenance import describe_provenance

__all__ = ["read_nifti", "write_nifti", "FORMAT"]

# ITK writes this metadata key into the 80-character NIfTI `descrip` field.
_DESCRIP_KEY = "ITK_FileNotes"


def read_nifti(path: str | Path) -> Image:
    """Read a 2D or 3D NIfTI file.

    Returns Image with array (Z, Y, X) float32 (Z = 1 for 2D) or (Z, Y, X, 3) uint8,
    spacing/origin/direction from the header (a 2D image gets z spacing 1, origin z 0,
    and its 2x2 direction embedded in a 3x3 identity), and meta["nifti_ndim"] = 2 or 3
    so the writer gives back the same dimensionality.
    Raises InputFormatError for unreadable files, 4D+ images, non-RGB vector pixels,
    and NaN or infinite voxels (named with their count).
    """
    import SimpleITK as sitk

    p = Path(path)
    header = read_header(p)
    if header is None:
        raise InputFormatError(f"{p}: not a NIfTI file (no valid NIfTI header)")
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
        bad = count_nonfinite(p, header) or int(np.count_nonzero(~np.isfinite(arr)))
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
    with atomic_output(out, overwrite=overwrite, inputs=inputs) as tmp:
        if header is None:
            sitk.WriteImage(img, str(tmp), useCompression=out.name.lower().endswith(".gz"))
            return out
        raw = tmp.with_name(tmp.name + ".raw.nii")
        try:
            sitk.WriteImage(img, str(raw), useCompression=False)
            os.replace(copy_geometry(header, raw, out.name), tmp)
        finally:
            raw.unlink(missing_ok=True)
            raw.with_name(raw.name + ".gz").unlink(missing_ok=True)
    return out


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
    read=lambda source: read_nifti(source.path),
    write=write_nifti,
    output_suffix=lambda source: ".nii.gz" if source.path.name.lower().endswith(".gz")
    else ".nii",
    writes=(".nii", ".nii.gz"),
)
