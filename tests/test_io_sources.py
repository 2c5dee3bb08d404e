"""find_inputs: what counts as an input, DICOM series grouping, output paths."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from ratcli.errors import InputFormatError, InputNotFoundError
from ratcli.io import Source, find_inputs, is_slide, output_path_for, output_suffix_for
from ratcli.io.sources import group_dicom_files
from ratcli.phantom_dicom import save_datasets, synthetic_series


def _series(folder: Path, *, n=3, series_number=1, seed=0, names=None):
    vol = np.zeros((n, 4, 5), dtype=np.float32)
    return save_datasets(
        synthetic_series(vol, series_number=series_number, seed=seed), folder, names=names
    )


def test_missing_and_empty(tmp_path):
    with pytest.raises(InputNotFoundError, match="nope"):
        find_inputs(tmp_path / "nope")
    with pytest.raises(InputNotFoundError, match=str(tmp_path)):
        find_inputs(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    with pytest.raises(InputNotFoundError, match="no readable images"):
        find_inputs(tmp_path)


def test_single_file_of_unknown_type(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(InputFormatError, match="notes.txt"):
        find_inputs(f)


def test_kinds_and_rel_paths(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "vol.nii.gz").write_bytes(b"")
    (tmp_path / "a" / "img.PNG").write_bytes(b"")
    (tmp_path / "x.svs").write_bytes(b"")
    (tmp_path / "readme.md").write_text("skip me")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.png").write_bytes(b"")
    _series(tmp_path / "ct", names=["1", "2", "3"])  # DICOM without extension
    found = {str(s.rel): s for s in find_inputs(tmp_path)}
    assert set(found) == {"a/b/vol.nii.gz", "a/img.PNG", "x.svs", "ct"}
    assert found["a/b/vol.nii.gz"].kind == "nifti"
    assert found["a/img.PNG"].kind == "image"
    assert found["x.svs"].kind == "slide"
    ct = found["ct"]
    assert ct.kind == "dicom" and ct.path == tmp_path / "ct" and len(ct.files) == 3
    assert output_path_for(ct, "out") == Path("out/ct")
    assert output_path_for(found["a/b/vol.nii.gz"], "out") == Path("out/a/b/vol.nii.gz")
    assert output_path_for(found["a/img.PNG"], "out") == Path("out/a/img.png")
    assert output_path_for(found["x.svs"], "out") == Path("out/x.tif")


def test_series_folder_passed_directly(tmp_path):
    _series(tmp_path / "scan.v1")
    (src,) = find_inputs(tmp_path / "scan.v1")
    assert src.rel == Path("scan.v1") and output_suffix_for(src) == ""
    assert output_path_for(src, tmp_path / "out") == tmp_path / "out" / "scan.v1"


def test_two_series_in_one_folder_are_two_sources(tmp_path):
    mixed = tmp_path / "mixed"
    _series(mixed, n=3, series_number=2, seed=1, names=["a1.dcm", "a2.dcm", "a3.dcm"])
    _series(mixed, n=2, series_number=5, seed=2, names=["b1.dcm", "b2.dcm"])
    found = find_inputs(tmp_path)
    assert len(found) == 2
    assert sorted(len(s.files) for s in found) == [2, 3]
    assert len({s.series_uid for s in found}) == 2
    assert sorted(str(s.rel) for s in found) == ["mixed_s2", "mixed_s5"]
    assert all(s.path == mixed for s in found)


def test_single_dicom_file_and_unreadable_dcm(tmp_path):
    (one,) = _series(tmp_path, n=1, names=["slice"])
    (src,) = find_inputs(one)
    assert src.kind == "dicom" and output_path_for(src, "o") == Path("o/slice.dcm")
    bad = tmp_path / "bad.dcm"
    bad.write_text("not dicom at all")
    found = {s.path.name: s for s in find_inputs(tmp_path)}
    assert set(found) == {"slice", "bad.dcm"}
    assert found["bad.dcm"].series_uid is None


def test_dicom_objects_without_images_skipped_in_folders(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset

    _series(tmp_path / "ct")
    report = Dataset()
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    report.SOPInstanceUID = report.SeriesInstanceUID = pydicom.uid.generate_uid()
    report.Modality = "SR"
    save_datasets([_with_meta(report)], tmp_path / "ct", names=["report.dcm"])
    (src,) = find_inputs(tmp_path)
    assert len(src.files) == 3 and all(f.name != "report.dcm" for f in src.files)
    only = tmp_path / "only"
    save_datasets([_with_meta(report)], only, names=["report.dcm"])
    with pytest.raises(InputNotFoundError, match="skipped 1 object.*report.dcm: a structured"):
        find_inputs(only)


def _with_meta(ds):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\x00" * 128
    return ds


def test_is_slide(tmp_path):
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((64, 64), np.uint8), tile=(32, 32))
    wide = tmp_path / "wide.tif"
    tifffile.imwrite(wide, np.zeros((32, 4352), np.uint8), tile=(32, 256), compression="zlib")
    pyramid = tmp_path / "pyr.tiff"
    with tifffile.TiffWriter(pyramid) as tw:
        tw.write(np.zeros((512, 512, 3), np.uint8), tile=(256, 256))
        tw.write(np.zeros((256, 256, 3), np.uint8), tile=(256, 256), subfiletype=1)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00garbage")
    assert not is_slide(small)
    assert is_slide(wide)
    assert is_slide(pyramid)
    assert not is_slide(corrupt)
    kinds = {s.path.name: s.kind for s in find_inputs(tmp_path)}
    assert kinds == {"small.tif": "image", "wide.tif": "slide", "pyr.tiff": "slide",
                     "corrupt.tif": "image"}


def test_source_is_frozen():
    s = Source(Path("a"), (Path("a"),), "image", Path("a"))
    with pytest.raises(AttributeError):
        s.kind = "dicom"


def test_dicom_files_passed_one_by_one_are_grouped_by_series(tmp_path):
    a = _series(tmp_path / "mixed", n=3, series_number=2, seed=1, names=["a1", "a2", "a3"])
    b = _series(tmp_path / "mixed", n=2, series_number=5, seed=2, names=["b1", "b2"])
    (lone,) = _series(tmp_path / "other", n=1, series_number=7, seed=3, names=["c1.dcm"])
    sources, skipped = group_dicom_files([b[1], *a, lone, b[0]])
    assert skipped == []
    by_rel = {str(s.rel): s for s in sources}
    assert set(by_rel) == {"mixed_s2", "mixed_s5", "c1.dcm"}
    assert sorted(f.name for f in by_rel["mixed_s5"].files) == ["b1", "b2"]
    assert by_rel["mixed_s2"].path == tmp_path / "mixed" and by_rel["c1.dcm"].path == lone
