"""Series geometry as vendors write it: gantry tilt, uneven slice spacing, enhanced
multi-frame CT. rat must restore each and write a derived series whose every slice (or
frame) keeps its source position and orientation, and that SimpleITK reads as one volume
with the geometry it reads from the source.

What rat does with these (ratcli/io/dicom_geometry.py, dicom_derived.py): slices are
sorted along the normal of ImageOrientationPatient; the in-memory Image gets the first
slice's position as origin and the median gap along the normal as its z spacing (it
never resamples: slice k of the array is source slice k). While the output grid is the
source grid (denoising), the derived instances copy ImagePositionPatient,
ImageOrientationPatient and the functional groups verbatim from their source instance,
so uneven gaps and a gantry-tilt shear survive in the DICOM output exactly. A NIfTI
output, which holds one regular grid, is refused for such a series (`check_one_grid`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers import small_checkpoint

from ratcli.api import restore_many
from ratcli.inference import Restorer
from ratcli.io import read
from ratcli.phantom_dicom import save_datasets, synthetic_series
from ratcli.phantoms import ct_phantom

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
TILT = np.deg2rad(15.0)  # gantry tilt about the patient x axis
ROW, COL = (1.0, 0.0, 0.0), (0.0, float(np.cos(TILT)), float(np.sin(TILT)))
SPACING = (0.7, 0.7, 3.0)  # x, y, z mm
ORIGIN = (-11.2, -11.2, 100.0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return small_checkpoint(tmp_path_factory.mktemp("weights") / "ct.pt", "ct")


def tilted_series(folder: Path, *, table_steps: bool) -> np.ndarray:
    """4 slices 32x32 tilted 15 degrees about x, written without a suffix.

    table_steps False: positions step along the tilted normal (an oblique stack);
    True: along the table axis z, as a CT with GantryDetectorTilt 15 writes them (the
    stack is sheared: each slice also moves 3 mm * sin 15 = 0.78 mm along the columns
    relative to the normal). Returns the HU volume written."""
    vol = ct_phantom(size=32, slices=4, seed=5)
    dss = synthetic_series(vol, spacing=SPACING, origin=ORIGIN, row=ROW, col=COL, seed=5)
    if table_steps:
        for k, ds in enumerate(dss):
            ds.ImagePositionPatient = [str(v) for v in (*ORIGIN[:2], ORIGIN[2] + 3.0 * k)]
            ds.SliceLocation = str(ORIGIN[2] + 3.0 * k)
            ds.GantryDetectorTilt = "15"
    save_datasets(dss, folder, names=[f"CT{k:06d}" for k in range(len(dss))])
    return vol


def restore_one(source: Path, out: Path, weights: str) -> Path:
    (result,) = restore_many([source], out, weights=weights, device="cpu", partitioner="none")
    assert result.status == "ok", result.error
    return Path(result.output)


def assert_positions_kept(source: Path, derived: Path) -> list[list[float]]:
    """Every derived instance carries its source instance's position, orientation and
    pixel spacing, as written (compared as DICOM strings); returns sorted positions."""
    src = {d.SOPInstanceUID: d for d in map(_header, source.iterdir())}
    out = [_header(f) for f in derived.iterdir()]
    assert len(out) == len(src)
    refs = [d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in out]
    assert sorted(refs) == sorted(src)  # one derived instance per source instance
    for d, ref in zip(out, refs, strict=True):
        s = src[ref]
        assert d.SOPInstanceUID != s.SOPInstanceUID
        for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            assert [str(v) for v in d[kw].value] == [str(v) for v in s[kw].value], kw
    return sorted(([float(v) for v in d.ImagePositionPatient] for d in out),
                  key=lambda p: p[2])


def assert_sitk_same_volume(source: Path, derived: Path, n: int) -> sitk.Image:
    """SimpleITK reads both series, each as one volume, with the same grid."""
    a, b = _sitk_series(source), _sitk_series(derived)
    assert a.GetSize() == b.GetSize() == (32, 32, n)
    np.testing.assert_allclose(b.GetSpacing(), a.GetSpacing(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.GetDirection(), a.GetDirection(), rtol=0, atol=1e-9)
    return a


@pytest.mark.parametrize("table_steps", [False, True], ids=["oblique", "gantry-tilt"])
def test_tilted_series_keeps_every_position(tmp_path, weights, table_steps):
    src = tmp_path / "SE0001"
    vol = tilted_series(src, table_steps=table_steps)
    img = read(src)
    np.testing.assert_allclose(img.array, vol, atol=0.5)  # integer HU as stored
    np.testing.assert_allclose(img.direction, np.column_stack(
        [ROW, COL, np.cross(ROW, COL)]).ravel(), atol=1e-12)
    # rat's z spacing is the distance between slice planes along the normal: 3 mm for
    # the oblique stack, 3 mm * cos 15 for the sheared one (SimpleITK says 3 mm there,
    # the distance between slice origins; the grid cannot describe a shear either way).
    assert img.spacing[2] == pytest.approx(3.0 * (np.cos(TILT) if table_steps else 1.0))
    out = restore_one(src, tmp_path / "OUT", weights)
    positions = assert_positions_kept(src, out)
    if table_steps:
        np.testing.assert_allclose(positions, [[-11.2, -11.2, 100.0 + 3 * k] for k in range(4)])
    ref = assert_sitk_same_volume(src, out, 4)
    np.testing.assert_allclose(ref.GetDirection(), img.direction, atol=1e-9)
    back = read(out)  # and rat reads its own output on the grid it read the source on
    assert back.origin == img.origin and back.direction == img.direction
    assert back.spacing == img.spacing


@pytest.mark.slow
def test_cli_restores_gantry_tilt(tmp_path, weights):
    src = tmp_path / "tilt" / "SE0002"
    tilted_series(src, table_steps=True)
    out = tmp_path / "OUT"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ratcli", "denoise", str(src), "-o", str(out), "--json",
         "--weights", weights, "--regions", "none", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (record,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert record["status"] == "ok" and Path(record["output"]) == out
    assert_positions_kept(src, out)
    assert_sitk_same_volume(src, out, 4)


def test_uneven_spacing_keeps_positions_per_slice(tmp_path, weights):
    """Gaps 2.5, 2.5, 5, 2.5 mm (a missing slice, or two reconstructions joined): rat
    neither refuses nor resamples. The Image carries the median gap (2.5 mm) as its z
    spacing and slice k of the array is source slice k; the derived series copies each
    slice's own position, so the 5 mm gap is still there."""
    z = [0.0, 2.5, 5.0, 10.0, 12.5]
    vol = ct_phantom(size=32, slices=5, seed=6)
    dss = synthetic_series(vol, spacing=(0.8, 0.8, 2.5), origin=(-12.4, -12.4, 0.0), seed=6)
    for ds, zk in zip(dss, z, strict=True):
        ds.ImagePositionPatient = ["-12.4", "-12.4", str(zk)]
        ds.SliceLocation = str(zk)
    # Reverse name order: the reader must sort by position, not by file name.
    src = tmp_path / "SE0003"
    save_datasets(dss[::-1], src, names=[f"IMG{k}" for k in range(5)])
    img = read(src)
    assert img.array.shape == (5, 32, 32)
    np.testing.assert_allclose(img.array, vol, atol=0.5)  # not resampled: slice k is slice k
    assert img.spacing == (0.8, 0.8, 2.5) and img.origin == (-12.4, -12.4, 0.0)
    out = restore_one(src, tmp_path / "OUT", weights)
    positions = assert_positions_kept(src, out)
    np.testing.assert_allclose(positions, [[-12.4, -12.4, zk] for zk in z])
    # SimpleITK holds one spacing for the volume too (the mean gap, 3.125 mm, with a
    # "non uniform sampling" warning), and reads the derived series exactly as it reads
    # the source: the same five slices on the same grid.
    ref = assert_sitk_same_volume(src, out, 5)
    assert ref.GetOrigin() == pytest.approx((-12.4, -12.4, 0.0))
    derived = sitk.GetArrayFromImage(_sitk_series(out))
    np.testing.assert_allclose(derived, read(out).array, atol=1e-3)  # same slice order


@pytest.mark.parametrize("case", ["uneven", "gantry-tilt", "oblique"])
def test_nifti_output_only_when_slices_fit_one_grid(tmp_path, weights, case, monkeypatch):
    """A NIfTI holds one regular grid: gaps of 2.5 and 7.5 mm would put the middle slice
    2.5 mm from where it was (on the 5 mm median grid), a gantry-tilt shear the last
    slice 2.3 mm. rat refuses such a series
    to NIfTI (one line, nothing written, before the model runs) instead of writing it
    there silently; a stack that fits one grid (the oblique one) is written with its
    tilted direction."""
    src = tmp_path / "SE0004"
    if case == "uneven":
        dss = synthetic_series(np.zeros((3, 32, 32)), spacing=(1.0, 1.0, 2.5))
        dss[2].ImagePositionPatient = ["0", "0", "10"]  # gaps 2.5 and 7.5 mm
        save_datasets(dss, src)
    else:
        tilted_series(src, table_steps=case == "gantry-tilt")
    out = tmp_path / "OUT" / "ct.nii.gz"
    runs = []
    restore = Restorer.restore
    monkeypatch.setattr(Restorer, "restore",
                        lambda self, im, **kw: runs.append(1) or restore(self, im, **kw))
    (result,) = restore_many([src], out, weights=weights, device="cpu", partitioner="none")
    if case == "oblique":
        assert result.status == "ok", result.error
        back = read(out)
        np.testing.assert_allclose(back.direction, read(src).direction, atol=1e-6)
        np.testing.assert_allclose(back.spacing, SPACING, atol=1e-5)
        assert runs == [1]
        return
    assert result.status == "error", result.output
    assert runs == []  # refused on the input, no inference wasted
    assert "not on one regular grid" in result.error and "DICOM output" in result.error
    assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing left behind


def test_enhanced_multiframe_ct(tmp_path, weights):
    """One Enhanced CT file: per-frame PlanePosition and rescale, shared orientation and
    pixel measures. rat writes the derived object as one Enhanced CT file too (frames in
    source order, functional groups copied), so SimpleITK reads it with ReadImage."""
    vol = ct_phantom(size=32, slices=4, seed=7)
    (ds,) = synthetic_series(vol, multiframe=True, spacing=SPACING, origin=ORIGIN, row=ROW,
                             col=COL, seed=7)
    assert ds.SOPClassUID == ENHANCED_CT and int(ds.NumberOfFrames) == 4
    # Frame 2 stores its values 100 higher with intercept -1124 (same HU): the reader must
    # take each frame's own PixelValueTransformationSequence.
    stored = np.frombuffer(ds.PixelData, "<i2").reshape(4, 32, 32).copy()
    stored[2] += 100
    ds.PixelData = stored.tobytes()
    ds.PerFrameFunctionalGroupsSequence[2].PixelValueTransformationSequence[0] \
        .RescaleIntercept = "-1124"
    (path,) = save_datasets([ds], tmp_path / "in", names=["ENHANCED"])
    img = read(path)
    np.testing.assert_allclose(img.array, vol, atol=0.5)  # HU, frame 2 included
    np.testing.assert_allclose(img.spacing, SPACING, atol=1e-9)
    np.testing.assert_allclose(img.origin, ORIGIN, atol=1e-9)
    np.testing.assert_allclose(img.direction, np.column_stack(
        [ROW, COL, np.cross(ROW, COL)]).ravel(), atol=1e-12)

    out = restore_one(path, tmp_path / "OUT", weights)
    assert out.is_file()  # one multi-frame file, not a folder of slices
    d, s = pydicom.dcmread(out), pydicom.dcmread(path, stop_before_pixels=True)
    assert d.SOPClassUID == ENHANCED_CT and int(d.NumberOfFrames) == 4
    assert d.SourceImageSequence[0].ReferencedSOPInstanceUID == s.SOPInstanceUID
    for k in range(4):  # frame k of the output is frame k of the source, same place
        out_pos = d.PerFrameFunctionalGroupsSequence[k].PlanePositionSequence[0]
        src_pos = s.PerFrameFunctionalGroupsSequence[k].PlanePositionSequence[0]
        assert list(out_pos.ImagePositionPatient) == list(src_pos.ImagePositionPatient)
    for seq in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
        assert d.SharedFunctionalGroupsSequence[0][seq].value == \
            s.SharedFunctionalGroupsSequence[0][seq].value
    back = read(out)
    assert back.array.shape == (4, 32, 32)
    assert back.origin == img.origin and back.spacing == img.spacing
    assert back.direction == img.direction
    # SimpleITK (GDCM) reads the enhanced output as one volume on the source's grid.
    a, b = sitk.ReadImage(str(path)), sitk.ReadImage(str(out))
    assert a.GetSize() == b.GetSize() == (32, 32, 4)
    np.testing.assert_allclose(a.GetDirection(), img.direction, atol=1e-9)  # tilt seen
    np.testing.assert_allclose(a.GetSpacing(), SPACING, atol=1e-9)
    np.testing.assert_allclose(b.GetSpacing(), a.GetSpacing(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.GetDirection(), a.GetDirection(), rtol=0, atol=1e-9)
    # Same values as rat reads, except frame 2: GDCM applies one rescale (frame 0's) to
    # every frame, so it reads the source's frame 2 and the derived one (which keeps
    # each frame's rescale, as the source has it) 100 HU off. A GDCM limit, not rat's.
    frames = [0, 1, 3]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(b)[frames], back.array[frames])


def _header(path: Path):
    return pydicom.dcmread(path, stop_before_pixels=True)


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    assert len(names) == len(list(folder.iterdir()))  # one series holds every file
    reader.SetFileNames(names)
    return reader.Execute()
