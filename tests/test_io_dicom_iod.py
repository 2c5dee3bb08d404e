"""Derived DICOM: the IOD's Type 2 attributes are present even when the source lacks
them, rat is named in SoftwareVersions, and one Image gives one derived series."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ratcli import __version__
from ratcli.io import find_inputs, read, write
from ratcli.io.dicom_iod import CT_IMAGE_STORAGE, PET_IMAGE_STORAGE
from ratcli.phantom_dicom import save_datasets, synthetic_series

PROV = {"task": "ct", "weights": "rat-ct-test", "weights_sha256": "ab" * 32}
COMMON = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
          "SeriesNumber", "PositionReferenceIndicator", "Manufacturer", "InstanceNumber"]
BY_MODALITY = {
    "CT": ["PatientPosition", "SliceThickness", "KVP", "AcquisitionNumber"],
    "PT": ["SliceThickness", "CorrectedImage", "CollimatorType", "AcquisitionDate",
           "AcquisitionTime", "ActualFrameDuration", "RadiopharmaceuticalInformationSequence"],
}


def _minimal(path: Path, modality: str, z: float, series_uid: str) -> None:
    """A single-frame image with only Type 1 attributes (what a careless exporter writes)."""
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE if modality == "CT" else PET_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", series_uid
    ds.FrameOfReferenceUID = "1.2.3.5"
    ds.Modality = modality
    ds.ImagePositionPatient = [0, 0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, (-1024 if modality == "CT" else 0)
    ds.PixelData = (np.arange(64, dtype="<u2") * 10).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("modality", ["CT", "PT"])
def test_derived_from_a_minimal_source_has_every_type2_attribute_empty(tmp_path, modality):
    for k in range(3):
        _minimal(tmp_path / "in" / f"{k}.dcm", modality, float(k), "1.2.3.6")
    image = read(tmp_path / "in")
    out = write(image.derived(image.array + 1.0), tmp_path / "out", provenance=PROV)
    derived = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    assert len(derived) == 3
    for ds in derived:
        for kw in COMMON + BY_MODALITY[modality]:
            assert kw in ds, kw
            assert ds[kw].is_empty, (kw, ds[kw].value)
        assert ds.SoftwareVersions == f"rat {__version__}"  # one value: a str
        (equipment,) = ds.ContributingEquipmentSequence
        assert equipment.Manufacturer == "rat"
        assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109103"
        assert "task=ct" in equipment.ContributionDescription


def test_source_values_are_kept_and_rat_joins_their_software_versions(tmp_path):
    dss = synthetic_series(np.zeros((2, 8, 8), np.float32), modality="CT", series_number=7)
    for ds in dss:
        ds.SoftwareVersions = ["scanner 1.0", "recon 2"]
    save_datasets(dss, tmp_path / "in")
    image = read(tmp_path / "in")
    out = write(image, tmp_path / "out", provenance=PROV)
    for f in out.iterdir():
        ds = pydicom.dcmread(f)
        assert list(ds.SoftwareVersions) == ["scanner 1.0", "recon 2", f"rat {__version__}"]
        assert ds.KVP == 100 and ds.PatientID == "RAT-PHANTOM-001"  # copied, not emptied
        assert ds.PatientPosition == "HFS" and ds.StudyID == "1"


def test_every_file_of_one_source_series_goes_into_one_derived_series(tmp_path):
    """Files of one series, found in two folders, are one Source (grouped by
    SeriesInstanceUID), one Image, and so one derived series with one number."""
    dss = synthetic_series(np.zeros((4, 8, 8), np.float32), modality="CT", series_number=2)
    save_datasets(dss[:2], tmp_path / "in" / "a", names=["IM0001.dcm", "IM0002.dcm"])
    save_datasets(dss[2:], tmp_path / "in" / "b", names=["IM0003.dcm", "IM0004.dcm"])
    (src,) = find_inputs(tmp_path / "in")
    assert len(src.files) == 4
    out = write(read(src), tmp_path / "out", provenance=PROV)
    derived = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    assert len(derived) == 4
    assert len({ds.SeriesInstanceUID for ds in derived}) == 1
    assert {ds.SeriesNumber for ds in derived} == {1002}
    assert derived[0].SeriesInstanceUID != dss[0].SeriesInstanceUID
