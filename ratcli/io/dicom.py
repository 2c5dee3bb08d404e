"""DICOM reader: a file, a series of single-frame files, or one multi-frame file -> Image.

Slices are sorted by their position along the slice normal (row x column direction
cosines), as GDCM/SimpleITK do, never by file name (`ratcli.io.dicom_geometry`).
Pixels are decoded by pydicom's pixel-data plugins (pylibjpeg: JPEG, JPEG-LS,
JPEG 2000; RLE built in) and mapped through the modality LUT / rescale, so CT is in
HU and PET in its `Units`. The writer of derived series is `ratcli.io.dicom_derived`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ratcli.errors import InputFormatError
from ratcli.io.checks import check_length, check_pixels, one_line
from ratcli.io.dicom_derived import write_dicom
from ratcli.io.dicom_geometry import DicomMeta, rescale_of
from ratcli.io.dicom_geometry import Frame as _Frame
from ratcli.io.dicom_geometry import frames_of as _frames_of
from ratcli.io.dicom_geometry import geometry as _geometry
from ratcli.io.dicom_geometry import off_grid_mm as _off_grid_mm
from ratcli.io.formats import Format
from ratcli.io.image import Domain, Image

__all__ = ["read_dicom", "DicomMeta", "FORMAT"]

def read_dicom(files: Sequence[str | Path], *, name: str | Path | None = None,
               max_pixels: int | None = None) -> Image:
    """Read one DICOM image, series or multi-frame file.

    files: the file(s) of one series (any order). name: how errors name the input
        (default: the first file).
    max_pixels: limit on Rows x Columns x frames of the whole series, checked on the
        headers before decoding (None: RAT_MAX_PIXELS or `checks.DEFAULT_MAX_PIXELS`;
        0: no limit); ImageTooLargeError above it.
    Returns Image with array (Z, Y, X) float32 (CT in HU, PT in `Units`, other
    modalities in rescaled units) or (Z, Y, X, 3) uint8 for colour; geometry in
    SimpleITK/LPS convention; `meta["dicom"]` a DicomMeta; `meta["units"]` for PT.
    Raises InputFormatError naming the file: not DICOM, truncated/corrupt (pixel data
    shorter than Rows x Columns x frames x bits), no pixel data, 1-bit data, mixed
    sizes or orientations, several slices at one position.
    """
    paths = [Path(f) for f in files]
    label = Path(name) if name is not None else paths[0]
    datasets = [_load(p) for p in paths]
    nframes = [int(ds.get("NumberOfFrames") or 1) for ds in datasets]
    first = datasets[0]
    check_pixels(label, (sum(nframes), int(first.Rows), int(first.Columns)), max_pixels)
    multiframe = any(n > 1 for n in nframes)
    if multiframe and len(datasets) > 1:
        raise InputFormatError(f"{label}: series mixes multi-frame files; give one file at a time")
    _check_consistent(datasets, paths, label)

    frames = _frames_of(datasets[0], 0) if multiframe else [
        _frames_of(ds, i)[0] for i, ds in enumerate(datasets)
    ]
    order, spacing, origin, direction = _geometry(frames, datasets[0], label)
    slices = _pixels(datasets, paths, frames, order)
    modality = str(first.get("Modality", "OT")) or "OT"
    rgb = int(first.get("SamplesPerPixel", 1)) == 3
    domain = Domain.RGB8 if rgb else {"CT": Domain.HU, "PT": Domain.ACTIVITY}.get(
        modality, Domain.GREY
    )
    for ds in datasets:
        # Pixels are held in `array`; the header copies stay small.
        for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if kw in ds:
                delattr(ds, kw)
    meta = {
        "format": "dicom",
        "dicom": DicomMeta(
            datasets=datasets,
            files=paths,
            frames=[(frames[k].ds_index, frames[k].frame_index) for k in order],
            multiframe=multiframe,
            geometry=(spacing, origin, direction),
            off_grid_mm=_off_grid_mm(frames, order, spacing, origin, direction),
        ),
    }
    if modality == "PT":
        meta["units"] = str(first.get("Units", ""))
    return Image(
        array=slices,
        spacing=spacing,
        origin=origin,
        direction=direction,
        domain=domain,
        modality=modality,
        meta=meta,
        source=label,
    )


def _load(path: Path):
    """Parse one file; InputFormatError for anything that is not a DICOM image."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise InputFormatError(f"{path}: not a DICOM file (no DICM preamble or header)") from None
    except Exception as exc:
        raise InputFormatError(f"{path}: truncated or corrupt DICOM ({one_line(exc)})") from None
    if "PixelData" not in ds:
        what = ds.get("SOPClassUID")
        kind = f" ({what.name})" if what is not None and hasattr(what, "name") else ""
        raise InputFormatError(f"{path}: DICOM file has no pixel data{kind}")
    for kw in ("Rows", "Columns", "BitsAllocated"):
        if kw not in ds:
            raise InputFormatError(f"{path}: DICOM image lacks {kw}")
    if int(ds.BitsAllocated) == 1:
        raise InputFormatError(f"{path}: 1-bit (BitsAllocated 1) segmentation/overlay data "
                               "is not a restorable image")
    _check_native_length(ds, path)
    return ds


def _check_native_length(ds, path: Path) -> None:
    """Uncompressed pixel data must hold Rows x Columns x frames x samples x bits."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_compressed:
        return  # encapsulated fragments: a cut-short stream fails to decode instead
    need = (int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames") or 1)
            * int(ds.get("SamplesPerPixel") or 1) * int(ds.BitsAllocated) // 8)
    check_length(path, have=len(ds.PixelData), need=need, what="PixelData")


def _check_consistent(datasets: list, paths: list[Path], label: Path) -> None:
    first = datasets[0]
    for ds, p in zip(datasets[1:], paths[1:], strict=True):
        for kw in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated"):
            if ds.get(kw) != first.get(kw):
                raise InputFormatError(
                    f"{label}: {p.name} has {kw}={ds.get(kw)}, other slices {first.get(kw)}"
                )
        a, b = first.get("ImageOrientationPatient"), ds.get("ImageOrientationPatient")
        if (a is None) != (b is None) or (
            a is not None and not np.allclose(np.asarray(a, float), np.asarray(b, float), atol=1e-4)
        ):
            raise InputFormatError(f"{label}: {p.name} has a different slice orientation")


def _pixels(datasets: list, paths: list[Path], frames: list[_Frame], order: list[int]):
    """Decoded, rescaled frames in `order`: (Z, Y, X) float32 or (Z, Y, X, 3) uint8."""
    decoded: dict[int, np.ndarray] = {}
    out = []
    for k in order:
        fr = frames[k]
        ds, path = datasets[fr.ds_index], paths[fr.ds_index]
        if fr.ds_index not in decoded:
            decoded[fr.ds_index] = _decode(ds, path)
        arr = decoded[fr.ds_index]
        frame = arr[fr.frame_index] if int(ds.get("NumberOfFrames") or 1) > 1 else arr
        out.append(_to_real(frame, ds, fr.frame_index, path))
    return np.stack(out)


def _decode(ds, path: Path) -> np.ndarray:
    try:
        # Colour comes back as RGB (pydicom converts YBR to RGB by default).
        return ds.pixel_array
    except Exception as exc:
        raise InputFormatError(f"{path}: cannot decode pixel data ({one_line(exc)})") from None


def _to_real(frame: np.ndarray, ds, i: int, path: Path) -> np.ndarray:
    """Stored values -> real-world values (float32), or uint8 RGB unchanged."""
    if frame.ndim == 3:
        if frame.dtype != np.uint8:
            raise InputFormatError(f"{path}: only 8-bit colour DICOM is supported")
        return frame
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return apply_modality_lut(frame, ds).astype(np.float32)
    slope, intercept = rescale_of(ds, i)
    return (frame.astype(np.float64) * slope + intercept).astype(np.float32)


def _has_preamble(path: Path) -> bool:
    from ratcli.io.inputs import is_dicom_file

    return is_dicom_file(path)


# This format's entry in the table of formats (ratcli.io.formats).
FORMAT = Format(
    name="dicom",
    kind="dicom",
    label="DICOM",
    suffixes=(".dcm", ".dicom", ".ima"),
    read=lambda source, max_pixels=None: read_dicom(source.files, name=source.path,
                                                   max_pixels=max_pixels),
    write=write_dicom,
    # one .dcm for a single file (one slice or multi-frame), a folder for a series
    output_suffix=lambda source: ".dcm" if source.path.is_file() else "",
    writes=(".dcm",),
    converts_to=("nifti",),  # a series as one NIfTI volume, as dcm2niix does
    sniff=_has_preamble,
    own_images_only=True,
    writes_folders=True,
)
