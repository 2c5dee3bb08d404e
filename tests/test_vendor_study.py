"""A study folder as scanners and PACS exports write it: nested folders, files without a
suffix, a DICOMDIR, two CT series, a localizer (scout) beside the first series, and a
dose report (structured report) plus a dose screen (secondary capture). `rat denoise
STUDY -o OUT` must restore each CT series once and skip every other object with a
reason, exit 0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers import small_checkpoint
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from ratcli.api import restore_many
from ratcli.cli import app
from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"  # X-Ray Radiation Dose SR
STUDY_UID = generate_uid(entropy_srcs=["rat vendor study"])


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return small_checkpoint(tmp_path_factory.mktemp("weights") / "ct.pt", "ct")


@pytest.fixture
def study(tmp_path) -> Path:
    """STUDY/DICOMDIR and STUDY/DICOM/<patient>/<study>/SE*/I* (no suffixes)."""
    root = tmp_path / "STUDY"
    base = root / "DICOM" / "P0000001" / "S0000001"
    ct = dict(study_uid=STUDY_UID, frame_of_reference_uid=generate_uid(entropy_srcs=["for"]))
    s1 = synthetic_series(ct_phantom(size=16, slices=3, seed=1), series_number=2, seed=1, **ct)
    s2 = synthetic_series(ct_phantom(size=16, slices=2, seed=2), series_number=3, seed=2,
                          spacing=(1.0, 1.0, 2.5), **ct)
    scout = synthetic_series(np.full((1, 16, 32), -500.0, np.float32), series_number=1,
                             seed=3, **ct)
    for ds in scout:  # a projection radiograph, not a cross-section
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    screen = synthetic_series(np.zeros((1, 24, 24), np.float32), series_number=999, seed=4,
                              **ct)
    for ds in screen:  # the dose screen many CT scanners save with the study
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    save_datasets(s1, base / "SE000002", names=["I0000001", "I0000002", "I0000003"])
    save_datasets(scout, base / "SE000002", names=["I0000100"])  # beside series 2
    save_datasets(s2, base / "SE000003", names=["I0000001", "I0000002"])
    save_datasets(screen, base / "SE000999", names=["I0000001"])
    save_datasets([_dose_report()], base / "SE000999", names=["I0000002"])
    _dicomdir(root / "DICOMDIR")
    return root


def test_study_gives_one_record_per_object(study, tmp_path, weights):
    results = list(restore_many([study], tmp_path / "OUT", weights=weights, device="cpu",
                                partitioner="none"))
    by_status: dict[str, list] = {}
    for r in results:
        by_status.setdefault(r.status, []).append(r)
    assert sorted(by_status) == ["ok", "skipped"]
    skipped = {Path(r.input).name: r.note for r in by_status["skipped"]}
    assert set(skipped) == {"I0000100", "I0000001", "I0000002"}  # scout, screen, report
    assert "localizer" in skipped["I0000100"]
    assert "secondary capture" in skipped["I0000001"]
    assert "structured report" in skipped["I0000002"]
    restored = sorted(Path(r.output).relative_to(tmp_path / "OUT") for r in by_status["ok"])
    assert restored == [Path("DICOM/P0000001/S0000001/SE000002"),
                        Path("DICOM/P0000001/S0000001/SE000003")]
    for folder, n in zip(restored, (3, 2), strict=True):
        files = sorted((tmp_path / "OUT" / folder).iterdir())
        assert len(files) == n  # each series once, without the localizer
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in files])
        assert reader.Execute().GetSize() == (16, 16, n)  # one volume per derived series
        uids = {pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID for f in files}
        assert len(uids) == 1


def test_cli_json_on_the_study_exits_0(study, tmp_path, weights):
    r = CliRunner().invoke(app, ["denoise", str(study), "-o", str(tmp_path / "OUT"), "--json",
                                 "--weights", weights, "--regions", "none"])
    assert r.exit_code == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted(rec["status"] for rec in records) == ["ok", "ok", "skipped", "skipped",
                                                        "skipped"]
    assert all(rec["note"] for rec in records if rec["status"] == "skipped")
    assert "error" not in r.stderr


def _dose_report() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = DOSE_SR, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, generate_uid()
    ds.Modality, ds.SeriesNumber = "SR", 999
    ds.file_meta = _meta(DOSE_SR, ds.SOPInstanceUID)
    ds.preamble = b"\x00" * 128
    return ds


def _dicomdir(path: Path) -> None:
    """A minimal DICOMDIR (Media Storage Directory): an index, not an object to restore."""
    ds = Dataset()
    ds.FileSetID = "RAT"
    ds.DirectoryRecordSequence = []
    ds.file_meta = _meta("1.2.840.10008.1.3.10", generate_uid())
    ds.preamble = b"\x00" * 128
    ds.save_as(path, enforce_file_format=True)


def _meta(sop_class: str, instance: str) -> FileMetaDataset:
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID = sop_class, instance
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    return fm
