"""Original (not derived) DICOM series from phantom arrays, for examples and tests.

Real scanners write these; rat only derives from them. This module lets the examples
script and the tests build realistic CT/PET series from synthetic phantoms without
bundled patient data. Identifiers are fresh UIDs and an obviously synthetic patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["synthetic_series", "save_datasets"]

_SOP_CLASS = {
    ("CT", False): "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    ("CT", True): "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    ("PT", False): "1.2.840.10008.5.1.4.1.1.128",  # PET Image Storage
    ("PT", True): "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image Storage
}


def synthetic_series(
    volume: np.ndarray,
    *,
    modality: str = "CT",
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    row: Sequence[float] = (1.0, 0.0, 0.0),
    col: Sequence[float] = (0.0, 1.0, 0.0),
    multiframe: bool = False,
    series_number: int = 1,
    series_description: str = "synthetic",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    seed: int = 0,
) -> list:
    """Datasets of an original CT or PET series holding `volume`.

    volume: (Z, Y, X) float, HU for CT, activity (Bq/ml) for PT.
    spacing: (x, y, z) mm; origin: first voxel centre (LPS, mm); row/col: direction
        cosines of the image rows and columns; slice k sits at origin + k*z*(row x col).
    multiframe: one Enhanced CT/PET file with per-frame functional groups instead
        of one file per slice.
    CT is stored int16 with RescaleIntercept -1024 (integer HU); PT int16 with a
    per-slice RescaleSlope (intercept 0), as scanners do.
    Returns a list of pydicom Datasets (one, if multiframe) with file meta set.
    """
    from pydicom.uid import generate_uid

    if modality not in ("CT", "PT"):
        raise ValueError(f"modality must be CT or PT, got {modality!r}")
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3:
        raise ValueError(f"volume must be (Z, Y, X), got {vol.shape}")
    r, c = np.asarray(row, float), np.asarray(col, float)
    normal = np.cross(r, c)
    uids = {
        "study": study_uid or generate_uid(entropy_srcs=[f"study{seed}"]),
        "series": generate_uid(entropy_srcs=[f"series{seed}{series_number}{modality}"]),
        "for": frame_of_reference_uid or generate_uid(entropy_srcs=[f"for{seed}"]),
    }
    positions = [np.asarray(origin, float) + normal * spacing[2] * k for k in range(len(vol))]
    stored, rescales = zip(*(_store(s, modality) for s in vol), strict=True)
    common = dict(
        modality=modality, spacing=spacing, row=r, col=c, uids=uids,
        series_number=series_number, series_description=series_description,
    )
    if multiframe:
        ds = _base(sop_class=_SOP_CLASS[(modality, True)], instance=1, **common)
        _enhanced_frames(ds, positions=positions, rescales=rescales, spacing=spacing, r=r, c=c,
                         modality=modality)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
        ds.NumberOfFrames = len(vol)
        _pixels(ds, np.stack(stored))
        return [ds]
    out = []
    for k, (pix, (slope, intercept)) in enumerate(zip(stored, rescales, strict=True)):
        ds = _base(sop_class=_SOP_CLASS[(modality, False)], instance=k + 1, **common)
        ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
        ds.ImageOrientationPatient = [_ds(v) for v in (*r, *c)]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.SliceThickness = _ds(spacing[2])
        ds.SliceLocation = _ds(float(np.dot(normal, positions[k])))
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
        if modality == "CT":
            ds.RescaleType = "HU"
        _pixels(ds, pix)
        out.append(ds)
    return out


def save_datasets(datasets: Sequence, folder: str | Path, *, names: Sequence[str] | None = None):
    """Write datasets as DICOM Part 10 files into folder (IM0001.dcm, ... by default).
    Returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"IM{k + 1:04d}.dcm" for k in range(len(datasets))]
    paths = []
    for ds, name in zip(datasets, names, strict=True):
        ds.save_as(folder / name, enforce_file_format=True)
        paths.append(folder / name)
    return paths


def _store(values: np.ndarray, modality: str) -> tuple[np.ndarray, tuple[float, float]]:
    """One slice of real values -> (int16 stored values, (slope, intercept))."""
    if modality == "CT":
        return np.clip(np.rint(values + 1024.0), -32768, 32767).astype("<i2"), (1.0, -1024.0)
    top = float(values.max())
    slope = float(_ds(top / 32767.0)) if top > 0 else 1.0
    return np.clip(np.rint(values / slope), 0, 32767).astype("<i2"), (slope, 0.0)


def _base(*, sop_class: str, instance: int, modality: str, spacing, row, col, uids: dict,
          series_number: int, series_description: str):
    """Patient, study, series, equipment and image-pixel attributes shared by all."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[uids["series"], str(instance)])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.FrameOfReferenceUID = uids["for"]
    ds.PatientName, ds.PatientID = "RAT^Phantom", "RAT-PHANTOM-001"
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.StudyDate, ds.StudyTime = "20240101", "120000"
    ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = "20240101"
    ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "120100"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
    ds.StudyDescription = "Synthetic phantom (rat examples)"
    ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = (
        series_description, series_number, instance)
    ds.Modality, ds.Manufacturer = modality, "rat synthetic phantom"
    ds.ManufacturerModelName, ds.InstitutionName = "ratcli.phantoms", "none"
    ds.BodyPartExamined, ds.PatientPosition = "ABDOMEN", "HFS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    if modality == "CT":
        ds.KVP, ds.XRayTubeCurrent, ds.Exposure = "100", 40, 10  # a low-dose protocol
        ds.ConvolutionKernel = "B30f"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
    else:
        ds.Units, ds.DecayCorrection, ds.CorrectedImage = "BQML", "START", ["ATTN", "DECY"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = fm
    ds.preamble = b"\x00" * 128
    return ds


def _enhanced_frames(ds, *, positions, rescales, spacing, r, c, modality: str) -> None:
    """Shared orientation/spacing and per-frame position/rescale functional groups."""
    from pydicom.dataset import Dataset

    def item(**attrs):
        d = Dataset()
        for k, v in attrs.items():
            setattr(d, k, v)
        return d

    frame_type = item(FrameType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"])
    shared = item(
        **{f"{modality.replace('PT', 'PET')}ImageFrameTypeSequence": [frame_type]},
        PlaneOrientationSequence=[item(ImageOrientationPatient=[_ds(v) for v in (*r, *c)])],
        PixelMeasuresSequence=[item(PixelSpacing=[_ds(spacing[1]), _ds(spacing[0])],
                                    SliceThickness=_ds(spacing[2]))],
    )
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [
        item(
            PlanePositionSequence=[item(ImagePositionPatient=[_ds(v) for v in pos])],
            PixelValueTransformationSequence=[item(
                RescaleSlope=_ds(slope), RescaleIntercept=_ds(intercept), RescaleType="US")],
        )
        for pos, (slope, intercept) in zip(positions, rescales, strict=True)
    ]


def _pixels(ds, stored: np.ndarray) -> None:
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds["PixelData"].VR = "OW"


def _ds(value: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))
