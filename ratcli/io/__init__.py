"""File I/O: find inputs, read any supported file into an `Image`, write it back.

    sources = find_inputs(Path("scans/"))      # files, DICOM series, slides
    image = read(sources[0])                   # Image (Z, Y, X) + geometry
    write(restored, out_path, provenance={...}) # format from the suffix, atomic

Formats (one module each): DICOM (`dicom`, `dicom_derived`), NIfTI (`nifti`),
PNG/JPEG/TIFF (`plain`), whole-slide images (`wsi`). Heavy libraries (pydicom,
SimpleITK, tifffile, Pillow, OpenSlide) are imported only when their format is used.
"""

from __future__ import annotations

from pathlib import Path

from ratcli.errors import InputFormatError, UsageError
from ratcli.io.atomic import atomic_output
from ratcli.io.image import Domain, Image
from ratcli.io.sources import (
    Source,
    find_inputs,
    is_dicom_file,
    is_slide,
    output_path_for,
    output_suffix_for,
)

__all__ = [
    "Image",
    "Domain",
    "Source",
    "find_inputs",
    "read",
    "write",
    "output_suffix_for",
    "output_path_for",
    "is_slide",
    "is_dicom_file",
    "atomic_output",
]

_FILE_OUTPUTS = (".nii", ".nii.gz", ".png", ".tif", ".tiff", ".dcm")


def read(source: Source | str | Path) -> Image:
    """Read one input (a Source from find_inputs, or a path that holds exactly one
    image or series) into an Image. Errors are RatErrors naming the file."""
    if not isinstance(source, Source):
        found = find_inputs(source)
        if len(found) != 1:
            raise InputFormatError(
                f"{source}: holds {len(found)} images or series; read each one from find_inputs()"
            )
        source = found[0]
    if source.kind == "dicom":
        from ratcli.io.dicom import read_dicom

        return read_dicom(source.files, name=source.path)
    if source.kind == "nifti":
        from ratcli.io.nifti import read_nifti

        return read_nifti(source.path)
    if source.kind == "image":
        from ratcli.io.plain import read_plain

        return read_plain(source.path)
    if source.kind == "slide":
        from ratcli.io import wsi

        return wsi.read_slide(source.path)
    raise InputFormatError(f"{source.path}: unknown input kind {source.kind!r}")


def write(
    image: Image,
    path: str | Path,
    *,
    overwrite: bool = False,
    provenance: dict | None = None,
) -> Path:
    """Write `image` to `path`, picking the format from the suffix.

    .nii/.nii.gz: NIfTI. .png/.tif/.tiff: plain image (a slide image, meta format
    "slide", goes to the pyramidal slide writer). .dcm, or a path without one of these
    suffixes for an image read from DICOM: a derived DICOM instance / series folder.
    The output appears atomically; an existing one is refused unless overwrite.
    provenance: {"task": ..., "weights": name, "weights_sha256": hex} recorded in the
    file (DICOM DerivationDescription, NIfTI descrip, PNG/TIFF Software).
    Returns the path written.
    """
    out = Path(path)
    name = out.name.lower()
    kw = {"overwrite": overwrite, "provenance": provenance}
    if name.endswith((".nii", ".nii.gz")):
        from ratcli.io.nifti import write_nifti

        return write_nifti(image, out, **kw)
    if name.endswith((".png", ".tif", ".tiff")):
        if image.meta.get("format") == "slide":
            from ratcli.io import wsi

            return wsi.write_slide(image, out, **kw)
        from ratcli.io.plain import write_plain

        return write_plain(image, out, **kw)
    if name.endswith(".dcm") or "dicom" in image.meta:
        from ratcli.io.dicom_derived import write_dicom

        return write_dicom(image, out, **kw)
    raise UsageError(
        f"{out}: unknown output format; use one of {', '.join(_FILE_OUTPUTS)} "
        "(or a folder for a DICOM series)"
    )
