"""Derived DICOM output: a new series built from its source, the way highdicom does it.

Each output instance is a copy of its source instance (patient, study, frame of
reference, equipment and geometry are copied, nothing is invented) with:
new SeriesInstanceUID (one per output: every slice of the Image written goes into one
derived series) and SOPInstanceUIDs, ImageType DERIVED\\SECONDARY\\<source values 3+>,
DerivationDescription naming rat, the task and the weights' sha256, rat in
SoftwareVersions and ContributingEquipmentSequence, SourceImageSequence and
ReferencedSeriesSequence pointing at the source instance, new series/content date and
time, SeriesNumber + 1000, the IOD's Type 2 attributes present (empty when the source
lacks them, see `dicom_iod`), and the pixels stored uncompressed (Explicit VR Little
Endian) in the source's stored type.

Stored values: PET (whose IOD requires RescaleIntercept 0) gets a fresh per-frame
RescaleSlope that spans the stored range; other modalities keep their source
rescale (CT stays in integer HU steps). Values outside the representable range are
clipped. Colour is written as 8-bit RGB. PixelPaddingValue / PixelPaddingRangeLimit are
kept on the source grid (the restorer gives back the padding pixels unchanged,
ratcli.io.padding), in the output's stored values where the rescale is new.
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path

import numpy as np

from ratcli.errors import GeometryMismatchError, UsageError
from ratcli.io.atomic import atomic_output
from ratcli.io.dicom_geometry import DicomMeta, rescale_of
from ratcli.io.dicom_iod import (
    binary_values_to_little_endian,
    fill_type2,
    mark_frame_types_derived,
    name_rat,
)
from ratcli.io.image import Image
from ratcli.io.padding import PADDING_TAGS, restate_padding
from ratcli.io.provenance import describe_provenance

__all__ = ["write_dicom"]

# Attributes that describe the source pixels and would be wrong for the new ones.
_DROP = (
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "IconImageSequence",
    "DataSetTrailingPadding",
)
_LOSSLESS_SYNTAXES = frozenset({
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.5",  # RLE Lossless
})


def write_dicom(
    image: Image,
    path: str | Path,
    *,
    overwrite: bool = False,
    provenance: dict | None = None,
) -> Path:
    """Write `image` as a derived series of the DICOM it was read from.

    path: a folder (one file per slice, named like the source files) for a series of
        single-frame files, or a `.dcm` file for a single-slice or multi-frame source.
    provenance: {"task", "weights", "weights_sha256"} for DerivationDescription.
    Raises UsageError when the image did not come from DICOM or the output form does
    not fit it, GeometryMismatchError when its slice count differs from the source.
    """
    out = Path(path)
    meta = image.meta.get("dicom")
    if not isinstance(meta, DicomMeta):
        raise UsageError(
            f"{out}: DICOM output needs a DICOM input (the derived series copies patient, "
            "study and geometry from it); write .nii.gz instead"
        )
    single = out.suffix.lower() == ".dcm"
    if image.num_slices != len(meta.frames):
        raise GeometryMismatchError(
            f"{out}: image has {image.num_slices} slices, its DICOM source {len(meta.frames)}"
        )
    if meta.multiframe and not single:
        raise UsageError(f"{out}: a multi-frame DICOM input is written as one .dcm file")
    if not meta.multiframe and single and image.num_slices != 1:
        raise UsageError(f"{out}: {image.num_slices} slices need a folder output, not one .dcm")

    deriver = _Deriver(image, meta, provenance)
    inputs = [*meta.files, *([image.source] if image.source else [])]
    if meta.multiframe or single:
        ds = deriver.multiframe() if meta.multiframe else deriver.single(0)
        with atomic_output(out, overwrite=overwrite, inputs=inputs) as tmp:
            _save(ds, tmp)
        return out
    names = _file_names(meta)
    with atomic_output(out, overwrite=overwrite, directory=True, inputs=inputs) as tmp:
        for z in range(image.num_slices):
            _save(deriver.single(z), tmp / names[z])
    return out


def _save(ds, path: Path) -> None:
    """Encode as the file meta says (Explicit VR Little Endian), whatever the source
    encoding was (Dataset.save_as refuses to change endianness; dcmwrite does not)."""
    from pydicom import dcmwrite

    dcmwrite(path, ds, enforce_file_format=True)


class _Deriver:
    """Builds derived datasets for one output series (one SeriesInstanceUID)."""

    def __init__(self, image: Image, meta: DicomMeta, provenance: dict | None) -> None:
        from pydicom.uid import generate_uid

        self.image = image
        self.meta = meta
        self.provenance = provenance
        self.series_uid = generate_uid()
        self.now = datetime.now()
        self.same_grid = _same_grid(image, meta)

    def single(self, z: int):
        """The derived instance for output slice z of a series of single-frame files."""
        ds_index, _ = self.meta.frames[z]
        src = self.meta.datasets[ds_index]
        ds = self._copy(src)
        values = self.image.array[z]
        if not self.same_grid:
            _set_geometry(ds, self.image, z, self.meta)
        if self.image.is_rgb:
            _set_pixels(ds, values.astype(np.uint8), rgb=True)
            return ds
        lo, hi, dtype = _stored_range(src)
        if _refit(src):
            slope, intercept = _set_rescale_everywhere(ds, *_fit_rescale(values, hi, src))
        else:
            slope, intercept = rescale_of(src, 0)
        restate_padding(ds, src, (slope, intercept), (lo, hi))
        _set_pixels(ds, _quantise(values, lo, hi, slope, intercept, dtype), rgb=False)
        return ds

    def multiframe(self):
        """The derived multi-frame instance; frames keep their file order."""
        if not self.same_grid:
            raise UsageError(
                f"{self.image.source}: resampled multi-frame DICOM output is not supported; "
                "write .nii.gz instead"
            )
        src = self.meta.datasets[0]
        ds = self._copy(src)
        z_of_frame = {f: z for z, (_, f) in enumerate(self.meta.frames)}
        values = self.image.array[[z_of_frame[f] for f in range(len(z_of_frame))]]
        if self.image.is_rgb:
            _set_pixels(ds, values.astype(np.uint8), rgb=True)
            return ds
        lo, hi, dtype = _stored_range(src)
        if _refit(src):
            slope, intercept = _fit_rescale(values, hi, src)
            slope, intercept = _set_rescale_everywhere(ds, slope, intercept)
            restate_padding(ds, src, (slope, intercept), (lo, hi))
            frames = [_quantise(v, lo, hi, slope, intercept, dtype) for v in values]
        else:
            frames = [
                _quantise(v, lo, hi, *rescale_of(src, f), dtype) for f, v in enumerate(values)
            ]
        _set_pixels(ds, np.stack(frames), rgb=False)
        return ds

    def _copy(self, src):
        """A deep copy of `src` turned into a new derived instance (pixels not set)."""
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

        ds = copy.deepcopy(src)
        if getattr(src, "original_encoding", (None, True))[1] is False:
            binary_values_to_little_endian(ds)
        # padding tags name stored values: they hold only on the source's grid
        drop = _DROP if self.same_grid and not self.image.is_rgb else (*_DROP, *PADDING_TAGS)
        for kw in drop:
            if kw in ds:
                delattr(ds, kw)
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = self.series_uid
        ds.ImageType = ["DERIVED", "SECONDARY", *list(src.get("ImageType") or [])[2:]]
        mark_frame_types_derived(ds)
        ds.DerivationDescription = describe_provenance(self.provenance)
        name_rat(ds, description=ds.DerivationDescription,
                 when=self.now.strftime("%Y%m%d%H%M%S.%f"))
        ref = Dataset()
        ref.ReferencedSOPClassUID = src.SOPClassUID
        ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
        ds.SourceImageSequence = [ref]
        series_ref = Dataset()
        series_ref.SeriesInstanceUID = src.SeriesInstanceUID
        series_ref.ReferencedInstanceSequence = [copy.deepcopy(ref)]
        ds.ReferencedSeriesSequence = [series_ref]
        task = (self.provenance or {}).get("task")
        tag = f"rat {task}" if task else "rat"
        old = str(src.get("SeriesDescription") or "").strip()
        ds.SeriesDescription = (f"{old} ({tag})" if old else tag)[-64:]
        if src.get("SeriesNumber") not in (None, ""):
            ds.SeriesNumber = int(src.SeriesNumber) + 1000
        date, time = self.now.strftime("%Y%m%d"), self.now.strftime("%H%M%S.%f")
        for prefix in ("InstanceCreation", "Series", "Content"):
            setattr(ds, f"{prefix}Date", date)
            setattr(ds, f"{prefix}Time", time)
        syntax = str(getattr(getattr(src, "file_meta", None), "TransferSyntaxUID", "") or "")
        if syntax and syntax not in _LOSSLESS_SYNTAXES:
            # Pixels derived from lossy-compressed ones stay marked lossy (PS3.3 C.7.6.1.1.5).
            ds.LossyImageCompression = "01"
        fill_type2(ds)  # after every copy and change above: only what is still missing
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = ds.SOPClassUID
        fm.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = fm
        ds.preamble = b"\x00" * 128
        return ds


def _same_grid(image: Image, meta: DicomMeta) -> bool:
    """True when the output grid is the source grid (then geometry tags are copied)."""
    src = meta.datasets[0]
    if image.size_yx != (int(src.Rows), int(src.Columns)):
        return False
    spacing, origin, direction = meta.geometry
    return bool(
        np.allclose(image.spacing, spacing, rtol=0, atol=1e-6)
        and np.allclose(image.origin, origin, rtol=0, atol=1e-6)
        and np.allclose(image.direction, direction, rtol=0, atol=1e-9)
    )


def _set_geometry(ds, image: Image, z: int, meta: DicomMeta) -> None:
    """Position, orientation and pixel spacing of slice z from the image geometry.

    With the source orientation kept (in-plane resampling, e.g. SR), each slice moves
    by the same in-plane shift as the origin, so uneven source slice gaps stay as
    they were; otherwise slices are placed at origin + z * spacing along the normal."""
    d = np.asarray(image.direction, dtype=float).reshape(3, 3)
    sx, sy, sz = image.spacing
    _, src_origin, src_direction = meta.geometry
    src_pos = ds.get("ImagePositionPatient")
    if src_pos is not None and np.allclose(image.direction, src_direction, atol=1e-9):
        shift = np.asarray(image.origin, dtype=float) - np.asarray(src_origin, dtype=float)
        pos = np.asarray([float(v) for v in src_pos]) + shift
    else:
        pos = np.asarray(image.origin, dtype=float) + d[:, 2] * sz * z
    ds.ImagePositionPatient = [_ds(v) for v in pos]
    ds.ImageOrientationPatient = [_ds(v) for v in (*d[:, 0], *d[:, 1])]
    ds.PixelSpacing = [_ds(sy), _ds(sx)]


def _set_pixels(ds, stored: np.ndarray, *, rgb: bool) -> None:
    """Native little-endian pixel data; stored: (Y, X[, 3]) or (F, Y, X[, 3])."""
    ds.Rows, ds.Columns = int(stored.shape[-3 if rgb else -2]), int(stored.shape[-2 if rgb else -1])
    if rgb:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds["PixelData"].VR = "OB" if stored.dtype.itemsize == 1 else "OW"


def _stored_range(src) -> tuple[int, int, np.dtype]:
    """(lowest, highest) stored value and little-endian dtype of the source pixels."""
    bits = int(src.BitsAllocated)
    stored = int(src.get("BitsStored") or bits)
    signed = int(src.get("PixelRepresentation") or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    if signed:
        return -(2 ** (stored - 1)), 2 ** (stored - 1) - 1, dtype
    return 0, 2**stored - 1, dtype


def _refit(src) -> bool:
    """PET (per-frame slope, intercept 0) and modality-LUT sources get a new rescale."""
    return str(src.get("Modality", "")) == "PT" or "ModalityLUTSequence" in src


def _fit_rescale(values: np.ndarray, hi: int, src) -> tuple[float, float]:
    """Slope (and intercept, 0 for PET) mapping the values' range onto [0, hi]."""
    vmax = float(np.max(values)) if values.size else 0.0
    if str(src.get("Modality", "")) == "PT" or "ModalityLUTSequence" not in src:
        return (vmax / hi if vmax > 0 else 1.0), 0.0
    vmin = float(np.min(values))
    return ((vmax - vmin) / hi if vmax > vmin else 1.0), vmin


def _set_rescale_everywhere(ds, slope: float, intercept: float) -> tuple[float, float]:
    """Put one rescale wherever the source keeps it (top level or functional groups),
    replacing a modality LUT; returns the values as written (DS-rounded)."""
    s, b = _ds(slope), _ds(intercept)
    if "ModalityLUTSequence" in ds:
        del ds.ModalityLUTSequence
    holders = [ds]
    for kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(kw) or []:
            holders.extend(group.get("PixelValueTransformationSequence") or [])
    holders = [h for h in holders if "RescaleSlope" in h] or [ds]
    for h in holders:
        h.RescaleSlope, h.RescaleIntercept = s, b
    return float(s), float(b)


def _quantise(values, lo: int, hi: int, slope: float, intercept: float, dtype) -> np.ndarray:
    """Real values -> stored integers: round half to even, clip to [lo, hi]."""
    stored = np.rint((np.asarray(values, dtype=np.float64) - intercept) / slope)
    return np.clip(stored, lo, hi).astype(dtype)


def _ds(value: float) -> str:
    """A float as a valid DS string (at most 16 characters)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _file_names(meta: DicomMeta) -> list[str]:
    """Output names: the source file names when unique, else IM0001.dcm, ..."""
    names = [meta.files[i].name for i, _ in meta.frames]
    if len(set(names)) == len(names):
        return names
    return [f"IM{z + 1:04d}.dcm" for z in range(len(names))]
