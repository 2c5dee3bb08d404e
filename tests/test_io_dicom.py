"""DICOM: series/multi-frame/compressed reading and the derived-series writer."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from ratcli.errors import (
    GeometryMismatchError,
    InputFormatError,
    OutputExistsError,
    UsageError,
)
from ratcli.io import Domain, find_inputs, read, write
from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom, pet_phantom

PROV = {"task": "ct", "weights": "rat-ct-test", "weights_sha256": "0123abcd" * 8}
# Oblique, non-axis-aligned slice orientation so that geometry bugs show.
ROW = np.array([0.96, 0.28, 0.0])
COL = np.array([-0.2744, 0.9408, 0.2])
COL = COL - ROW * ROW.dot(COL)
COL /= np.linalg.norm(COL)


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    uids = reader.GetGDCMSeriesIDs(str(folder))
    assert len(uids) == 1, uids
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uids[0]))
    return reader.Execute()


@pytest.fixture
def ct_series(tmp_path):
    vol = ct_phantom(size=32, slices=5, seed=3)
    dss = synthetic_series(vol, spacing=(0.7, 0.8, 2.5), origin=(-12.5, 30.0, 101.0),
                           row=ROW, col=COL, series_description="low dose")
    # File names deliberately out of position order.
    names = ["c.dcm", "a.dcm", "e.dcm", "b.dcm", "d.dcm"]
    save_datasets(dss, tmp_path / "in" / "ct", names=names)
    return tmp_path / "in" / "ct", vol, dss


def test_series_sorted_by_position_not_name(ct_series):
    folder, vol, _ = ct_series
    (src,) = find_inputs(folder)
    img = read(src)
    assert img.array.shape == (5, 32, 32) and img.array.dtype == np.float32
    assert img.domain is Domain.HU and img.modality == "CT"
    np.testing.assert_allclose(img.array, vol, atol=0.5)  # int16 HU storage
    ref = _sitk_series(folder)
    np.testing.assert_allclose(img.spacing, ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(img.origin, ref.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(img.direction, ref.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(img.array, sitk.GetArrayFromImage(ref))


def test_derived_series_roundtrip(ct_series, tmp_path):
    folder, vol, dss = ct_series
    img = read(folder)
    restored = img.derived(img.array * 0.5 + 10.3)
    out = write(restored, tmp_path / "out" / "ct", provenance=PROV)
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["a.dcm", "b.dcm", "c.dcm", "d.dcm", "e.dcm"]

    src_by_uid = {d.SOPInstanceUID: d for d in dss}
    derived = [pydicom.dcmread(f) for f in files]
    series_uids = {d.SeriesInstanceUID for d in derived}
    assert len(series_uids) == 1 and dss[0].SeriesInstanceUID not in series_uids
    assert len({d.SOPInstanceUID for d in derived}) == 5
    assert not {d.SOPInstanceUID for d in derived} & set(src_by_uid)
    for d in derived:
        assert d.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert d.StudyInstanceUID == dss[0].StudyInstanceUID
        assert d.FrameOfReferenceUID == dss[0].FrameOfReferenceUID
        assert d.PatientID == dss[0].PatientID and d.PatientName == dss[0].PatientName
        assert list(d.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "rat" in d.DerivationDescription and "task=ct" in d.DerivationDescription
        assert PROV["weights_sha256"] in d.DerivationDescription
        assert d.SeriesDescription == "low dose (rat ct)"
        assert d.SeriesNumber == dss[0].SeriesNumber + 1000
        src = src_by_uid[d.SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert d.SourceImageSequence[0].ReferencedSOPClassUID == src.SOPClassUID
        assert d.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
        # Geometry copied from the very slice it was derived from.
        assert d.ImagePositionPatient == src.ImagePositionPatient
        assert d.ImageOrientationPatient == src.ImageOrientationPatient
        assert d.PixelSpacing == src.PixelSpacing and d.SliceThickness == src.SliceThickness
        assert d.RescaleSlope == 1 and d.RescaleIntercept == -1024

    back = _sitk_series(out)
    ref = _sitk_series(folder)
    assert back.GetSize() == ref.GetSize()
    assert back.GetSpacing() == ref.GetSpacing()
    assert back.GetOrigin() == ref.GetOrigin()
    assert back.GetDirection() == ref.GetDirection()
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), restored.array, atol=0.5)
    again = read(out)
    np.testing.assert_allclose(again.array, restored.array, atol=0.5)
    assert again.origin == img.origin and again.spacing == img.spacing


def test_values_clipped_to_representable_range(ct_series, tmp_path):
    folder, _, _ = ct_series
    img = read(folder)
    arr = img.array.copy()
    arr[0, 0, 0], arr[0, 0, 1] = 1e6, -1e6
    out = write(img.derived(arr), tmp_path / "clip")
    back = read(out).array
    assert back[0, 0, 0] == 32767 - 1024 and back[0, 0, 1] == -32768 - 1024


def test_existing_output_and_wrong_forms(ct_series, tmp_path):
    folder, _, _ = ct_series
    img = read(folder)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="out"):
        write(img, out)
    assert (out / "keep.txt").read_text() == "old"
    write(img, out, overwrite=True)
    assert len(list(out.iterdir())) == 5
    with pytest.raises(UsageError, match="folder"):
        write(img, tmp_path / "one.dcm")
    with pytest.raises(UsageError, match="input"):
        write(img, folder / "inside")
    with pytest.raises(GeometryMismatchError):
        write(img.derived(img.array[:2]), tmp_path / "fewer")
    nondicom = img.derived(img.array, meta={})
    with pytest.raises(UsageError, match="DICOM input"):
        write(nondicom, tmp_path / "x.dcm")
    with pytest.raises(UsageError, match="unknown output format"):
        write(nondicom, tmp_path / "series_folder")


def test_resampled_grid_gets_new_geometry(ct_series, tmp_path):
    folder, _, _ = ct_series
    img = read(folder)
    up = img.derived(np.repeat(np.repeat(img.array, 2, axis=1), 2, axis=2), scale=2)
    out = write(up, tmp_path / "sr")
    back = _sitk_series(out)
    assert back.GetSize() == (64, 64, 5)
    np.testing.assert_allclose(back.GetSpacing(), up.spacing, atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), up.origin, atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), up.direction, atol=1e-6)


def test_pet_series_units_and_slope(tmp_path):
    vol = pet_phantom(size=16, slices=3) * 1000.0  # Bq/ml
    save_datasets(synthetic_series(vol, modality="PT", spacing=(4.0, 4.0, 3.0)), tmp_path / "pt")
    img = read(tmp_path / "pt")
    assert img.domain is Domain.ACTIVITY and img.meta["units"] == "BQML"
    restored = img.derived(img.array * 2.5)
    out = write(restored, tmp_path / "out", provenance={"task": "pet"})
    for f in sorted(out.iterdir()):
        d = pydicom.dcmread(f)
        assert float(d.RescaleIntercept) == 0.0 and d.Units == "BQML"
        assert d.pixel_array.max() > 30000  # slope refitted to use the stored range
    back = read(out).array
    tol = restored.array.max(axis=(1, 2)) / 32767  # one stored step per slice
    assert (np.abs(back - restored.array).max(axis=(1, 2)) <= tol).all()


def test_multiframe_enhanced_ct(tmp_path):
    vol = ct_phantom(size=16, slices=4, seed=1)
    (ds,) = synthetic_series(vol, multiframe=True, spacing=(0.5, 0.6, 2.0), origin=(1, 2, 3))
    # Store the frames in reverse order: the reader must sort by position.
    frames = np.frombuffer(ds.PixelData, "<i2").reshape(4, 16, 16)[::-1]
    ds.PixelData = frames.tobytes()
    ds.PerFrameFunctionalGroupsSequence = list(ds.PerFrameFunctionalGroupsSequence)[::-1]
    (path,) = save_datasets([ds], tmp_path, names=["mf.dcm"])
    (src,) = find_inputs(path)
    img = read(src)
    assert img.array.shape == (4, 16, 16)
    np.testing.assert_allclose(img.array, vol, atol=0.5)
    assert img.origin == (1.0, 2.0, 3.0)
    np.testing.assert_allclose(img.spacing, (0.5, 0.6, 2.0))
    out = write(img.derived(img.array + 5.0), tmp_path / "out" / "mf.dcm", provenance=PROV)
    d = pydicom.dcmread(out)
    assert int(d.NumberOfFrames) == 4 and d.SeriesInstanceUID != ds.SeriesInstanceUID
    assert list(d.ImageType) == ["DERIVED", "SECONDARY", "AXIAL", "NONE"]
    frame_type = d.SharedFunctionalGroupsSequence[0].CTImageFrameTypeSequence[0].FrameType
    assert list(frame_type) == ["DERIVED", "SECONDARY", "AXIAL", "NONE"]
    # Frame i of the output is derived from frame i of the input (file order kept).
    np.testing.assert_allclose(d.pixel_array.astype(float), frames + 5.0, atol=0.5)
    np.testing.assert_allclose(read(out).array, vol + 5.0, atol=1.0)


def test_jpeg2000_compressed_series(tmp_path):
    vol = ct_phantom(size=32, slices=2)
    dss = synthetic_series(vol)
    for ds in dss:
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    save_datasets(dss, tmp_path / "j2k")
    assert pydicom.dcmread(tmp_path / "j2k" / "IM0001.dcm").file_meta.TransferSyntaxUID == (
        JPEG2000Lossless)
    img = read(tmp_path / "j2k")
    np.testing.assert_allclose(img.array, vol, atol=0.5)
    out = write(img, tmp_path / "out")
    d = pydicom.dcmread(out / "IM0001.dcm")
    assert d.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert d.get("LossyImageCompression") != "01"  # lossless source stays unmarked


def _bundled(name: str) -> Path:
    """A test file shipped inside the pydicom wheel (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, name
    return Path(path)


def test_bundled_jpeg_ls_and_lossy_rgb():
    plain = read(_bundled("MR_small.dcm"))
    jls = read(_bundled("MR_small_jpeg_ls_lossless.dcm"))
    np.testing.assert_array_equal(plain.array, jls.array)
    rgb = read(_bundled("SC_rgb_jpeg_dcmtk.dcm"))
    assert rgb.domain is Domain.RGB8 and rgb.array.shape[-1] == 3


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_other_encodings_written_as_explicit_little_endian(tmp_path, name):
    img = read(_bundled(name))
    out = write(img.derived(img.array + 1), tmp_path / "o.dcm")
    d = pydicom.dcmread(out)
    assert d.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert d.PatientName == pydicom.dcmread(_bundled(name)).PatientName
    np.testing.assert_array_equal(read(out).array, img.array + 1)


def test_lossy_rgb_marked_lossy(tmp_path):
    rgb = read(_bundled("SC_rgb_jpeg_dcmtk.dcm"))
    out = write(rgb, tmp_path / "rgb.dcm")
    d = pydicom.dcmread(out)
    assert d.LossyImageCompression == "01" and d.PhotometricInterpretation == "RGB"
    np.testing.assert_array_equal(d.pixel_array, rgb.array[0])


@pytest.mark.parametrize("shape", [(1, 1), (3, 5)])
def test_tiny_single_slice(tmp_path, shape):
    vol = np.full((1, *shape), 55.0)
    (path,) = save_datasets(synthetic_series(vol), tmp_path, names=["t.dcm"])
    img = read(path)
    assert img.array.shape == (1, *shape) and (img.array == 55.0).all()
    out = write(img.derived(img.array + 1), tmp_path / "o" / "t.dcm")
    assert (read(out).array == 56.0).all()


def test_two_series_in_one_folder_each_restored(tmp_path):
    from ratcli.io import output_path_for

    mixed = tmp_path / "in" / "mixed"
    study = synthetic_series(np.zeros((1, 2, 2)))[0].StudyInstanceUID
    for number, n in ((3, 3), (4, 2)):
        vol = np.full((n, 8, 8), float(number * 100))
        save_datasets(synthetic_series(vol, series_number=number, seed=number, study_uid=study),
                      mixed, names=[f"s{number}_{k}.dcm" for k in range(n)])
    with pytest.raises(InputFormatError, match="holds 2"):
        read(mixed)
    outs = []
    for src in find_inputs(tmp_path / "in"):
        img = read(src)
        number = int(img.meta["dicom"].datasets[0].SeriesNumber)
        assert (img.array == number * 100).all() and img.num_slices == {3: 3, 4: 2}[number]
        outs.append(write(img, output_path_for(src, tmp_path / "out")))
    assert sorted(p.name for p in outs) == ["mixed_s3", "mixed_s4"]
    assert sorted(len(list(p.iterdir())) for p in outs) == [2, 3]


def test_bad_files_name_the_file(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("this is a text file")
    with pytest.raises(InputFormatError, match="notes.dcm.*not a DICOM"):
        read(text)

    (good,) = save_datasets(synthetic_series(np.zeros((1, 32, 32))), tmp_path, names=["g.dcm"])
    trunc = tmp_path / "trunc.dcm"
    trunc.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(InputFormatError, match="trunc.dcm"):
        read(trunc)
    trunc_header = tmp_path / "trunc_header.dcm"
    trunc_header.write_bytes(good.read_bytes()[:300])
    with pytest.raises(InputFormatError, match="trunc_header.dcm"):
        read(trunc_header)

    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(InputFormatError, match="nopix.dcm.*no pixel data"):
        read(tmp_path / "nopix.dcm")


def test_duplicate_positions_rejected(tmp_path):
    dss = synthetic_series(np.zeros((2, 4, 4)))
    dss[1].ImagePositionPatient = dss[0].ImagePositionPatient
    save_datasets(dss, tmp_path / "dup")
    with pytest.raises(InputFormatError, match="dup.*several slices"):
        read(tmp_path / "dup")


def test_resampled_uneven_series_keeps_slice_positions(tmp_path):
    dss = synthetic_series(np.zeros((3, 4, 4)), spacing=(1.0, 1.0, 2.0))
    dss[2].ImagePositionPatient = [0, 0, 7.5]  # gaps 2 mm and 5.5 mm
    save_datasets(dss, tmp_path / "uneven")
    img = read(tmp_path / "uneven")
    up = img.derived(np.zeros((3, 8, 8), np.float32), scale=2)
    out = write(up, tmp_path / "sr")
    positions = sorted(
        [float(v) for v in pydicom.dcmread(f).ImagePositionPatient] for f in out.iterdir()
    )
    np.testing.assert_allclose(positions, [[-0.25, -0.25, z] for z in (0.0, 2.0, 7.5)])
