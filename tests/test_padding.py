"""Padding outside the field of view (issue 25): on a real 512^2 CT slice padded with
-2000 or -3024 HU outside the inscribed circle (with PixelPaddingValue, with a padding
range, or without any tag), the network and the partitioner see air there, the output
keeps the padding pixels' stored values and tags, and inside the circle the result is the
air-padded result.

Most cases run the Restorer with a stand-in network (a 9x9 mean: padding seen as tissue
would change every pixel within 4 px of the circle's edge) and write with the real writer;
one runs `restore_path` with a small RAT checkpoint, and a slow one the shipped rat-ct."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch.nn.functional as F
from helpers import small_checkpoint
from torch import nn

from ratcli.api import restore_path
from ratcli.inference import Restorer
from ratcli.io import read, write
from ratcli.io.padding import find_padding, restate_padding
from ratcli.regions import Partitioner
from ratcli.regions.run import label_image
from ratcli.tasks import TASKS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SOURCE = EXAMPLES / "ct_series" / "IM0002.dcm"  # real 512^2 CT, int16, intercept -1024
AIR_STORED = 24  # -1000 HU


class _Recorder(Partitioner):
    """One region per slice, keeping every slice it was shown."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def _partition(self, slice2d: np.ndarray) -> np.ndarray:
        self.seen.append(slice2d.copy())
        return np.zeros(slice2d.shape[:2], dtype=np.int32)


class _Mean9(nn.Module):
    """Stand-in network: the 9x9 mean of its input (x (B, 1, H, W) -> same)."""

    scale, in_channels, out_channels, multiple = 1, 1, 1, 16

    def forward(self, x, regions=None):
        return F.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=False)


def _outside(shape: tuple[int, int]) -> np.ndarray:
    """(Y, X) bool: outside the inscribed circle (the reconstruction field of view)."""
    H, W = shape
    yy, xx = np.mgrid[:H, :W]
    return (yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2 > (min(H, W) / 2) ** 2


def _padded(path: Path, stored: int | np.ndarray, *, tag: bool = False,
            limit: int | None = None) -> Path:
    """IM0002 with `stored` (a value, or one per outside pixel) outside the circle."""
    ds = pydicom.dcmread(SOURCE)
    pixels = ds.pixel_array.copy()
    pixels[_outside(pixels.shape)] = stored
    ds.PixelData = pixels.astype(np.int16).tobytes()
    if tag:
        value = int(np.min(stored))
        ds.add_new(0x00280120, "SS", value)  # PixelPaddingValue
        if limit is not None:
            ds.add_new(0x00280121, "SS", limit)  # PixelPaddingRangeLimit
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _restore(src: Path, out: Path, recorder: _Recorder | None = None) -> Path:
    """Read, restore (CT, stand-in network) and write, as restore_path does."""
    restorer = Restorer(_Mean9(), TASKS["ct"], device="cpu", partitioner=recorder or _Recorder())
    write(restorer.restore(read(src)), out, provenance={"task": "ct"})
    return out


@pytest.fixture(scope="module")
def air(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """(restored HU, the slice the partitioner saw) for the slice padded with air."""
    base = tmp_path_factory.mktemp("air")
    recorder = _Recorder()
    out = _restore(_padded(base / "air.dcm", AIR_STORED), base / "out.dcm", recorder)
    return read(out).array[0], recorder.seen[0]


@pytest.mark.parametrize(("stored", "tag"), [(-976, True), (-976, False),
                                             (-2000, True), (-2000, False)],
                         ids=["-2000HU-tag", "-2000HU", "-3024HU-tag", "-3024HU"])
def test_dicom_padding_kept_and_never_seen_as_tissue(tmp_path, air, stored, tag):
    src = _padded(tmp_path / "in.dcm", stored, tag=tag)
    recorder = _Recorder()
    out = _restore(src, tmp_path / "out.dcm", recorder)
    before, after = pydicom.dcmread(src), pydicom.dcmread(out)
    outside = _outside((512, 512))
    # the padding pixels' stored values, the rescale and the tag, exactly as they were
    assert np.array_equal(after.pixel_array[outside], before.pixel_array[outside])
    assert (after.RescaleSlope, after.RescaleIntercept) == (1, -1024)
    assert after.get("PixelPaddingValue") == (stored if tag else None)
    # inside the circle: the air-padded result; the partitioner saw the air-padded slice
    restored, seen = read(out).array[0], recorder.seen[0]
    assert np.abs(restored - air[0])[~outside].max() <= 1.0
    assert np.array_equal(seen, air[1])
    # other readers see the same HU: SimpleITK applies the rescale
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))[0].astype(np.float32)
    assert np.array_equal(itk, restored)
    assert np.all(itk[outside] == stored - 1024)


def test_padding_range_limit_kept(tmp_path, air):
    """PixelPaddingValue .. PixelPaddingRangeLimit: every value in the range is padding,
    whether or not it fills a region of one value."""
    outside = _outside((512, 512))
    varied = np.random.default_rng(0).integers(-2000, -1499, int(outside.sum()))
    src = _padded(tmp_path / "in.dcm", varied, tag=True, limit=-1500)
    out = _restore(src, tmp_path / "out.dcm")
    after = pydicom.dcmread(out)
    assert np.array_equal(after.pixel_array[outside], varied)
    assert (after.PixelPaddingValue, after.PixelPaddingRangeLimit) == (-2000, -1500)
    assert np.abs(read(out).array[0] - air[0])[~outside].max() <= 1.0


def test_nifti_ct_padding(tmp_path):
    """NIfTI has no tag: the border region below -1024 HU is padding."""
    hu = read(SOURCE).array
    outside = _outside(hu.shape[1:])
    results = {}
    for name, fill in (("air", -1000.0), ("padded", -3024.0)):
        arr = hu.copy()
        arr[:, outside] = fill
        src = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(src))
        out = _restore(src, tmp_path / f"{name}_out.nii.gz")
        results[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))[0]
    assert np.all(results["padded"][outside] == -3024.0)
    assert np.abs(results["padded"] - results["air"])[~outside].max() <= 1.0


def test_which_pixels_are_padding(tmp_path):
    """Only the constant fill outside the circle: the example slice's own noisy air below
    -1024 HU (5 % of its pixels, at the circle's edge too) is tissue to denoise."""
    ct = TASKS["ct"]
    plain = read(SOURCE)
    assert np.mean(plain.array < -1024) > 0.01 and find_padding(plain, ct) is None
    padded = read(_padded(tmp_path / "p.dcm", -2000))
    padding = find_padding(padded, ct)
    assert np.array_equal(padding.mask[0], _outside((512, 512))) and padding.fill == -1000
    assert find_padding(padded, TASKS["pet"]) is None  # no CT rule, no tag
    tagged = read(_padded(tmp_path / "t.dcm", -2000, tag=True))
    assert np.array_equal(find_padding(tagged, TASKS["pet"]).mask[0], _outside((512, 512)))


def test_region_maps_see_air(tmp_path):
    """`rat regions` partitions what inference partitions (and shares its cache)."""
    maps = {}
    for name, stored in (("air", AIR_STORED), ("padded", -2000)):
        recorder = _Recorder()
        label_image(read(_padded(tmp_path / f"{name}.dcm", stored)), recorder)
        maps[name] = recorder.seen[0]
    assert np.array_equal(maps["padded"], maps["air"])


def test_padding_tags_follow_a_new_rescale():
    """A refitted rescale (PET, modality LUT) restates the tags as the stored values the
    padding is written as; a value it cannot store drops them."""
    src = pydicom.Dataset()
    src.PixelRepresentation, src.RescaleSlope, src.RescaleIntercept = 1, 1, -1024
    src.add_new(0x00280120, "SS", -2000)
    src.add_new(0x00280121, "SS", -1500)
    ds = pydicom.Dataset()
    ds.update(src)
    restate_padding(ds, src, (2.0, -1024.0), (-32768, 32767))
    assert (ds.PixelPaddingValue, ds.PixelPaddingRangeLimit) == (-1000, -750)
    restate_padding(ds, src, (2.0, -1024.0), (0, 4095))
    assert "PixelPaddingValue" not in ds and "PixelPaddingRangeLimit" not in ds


def test_rat_model_end_to_end(tmp_path):
    """restore_path with a RAT checkpoint (small, random-init): -3024 HU padding with the
    tag against air padding, both through the planner, reader, model and writer."""
    ckpt = small_checkpoint(tmp_path / "ct.pt", "ct")
    results = {}
    for name, stored, tag in (("air", AIR_STORED, False), ("padded", -2000, True)):
        out = tmp_path / f"{name}_out.dcm"
        restore_path(_padded(tmp_path / f"{name}.dcm", stored, tag=tag), out, weights=ckpt,
                     device="cpu")
        results[name] = pydicom.dcmread(out)
    outside = _outside((512, 512))
    padded, air = results["padded"], results["air"]
    assert np.all(padded.pixel_array[outside] == -2000) and padded.PixelPaddingValue == -2000
    diff = np.abs(padded.pixel_array.astype(int) - air.pixel_array)  # slope 1: in HU
    assert diff[~outside].max() <= 1


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed")
def test_dcm2niix_reads_the_padding(tmp_path):
    src = _padded(tmp_path / "in.dcm", -2000, tag=True)
    out = _restore(src, tmp_path / "dcm" / "out.dcm")
    subprocess.run(["dcm2niix", "-z", "n", "-f", "conv", "-o", str(tmp_path), str(out.parent)],
                   check=True, capture_output=True)
    conv = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "conv.nii"))).astype(np.float32)
    ours = read(out).array
    # dcm2niix reorients; the values, padding included, are the same set
    assert np.array_equal(np.sort(conv.ravel()), np.sort(ours.ravel()))
    assert np.count_nonzero(conv == -3024) == np.count_nonzero(_outside((512, 512)))


@pytest.mark.slow
def test_padding_with_shipped_weights(tmp_path):
    """rat-ct itself: -3024 HU padding with the tag gives the air-padded result inside
    the circle (the network alone changed pixels there by up to 548 HU)."""
    results = {}
    for name, stored, tag in (("air", AIR_STORED, False), ("padded", -2000, True)):
        src = _padded(tmp_path / f"{name}.dcm", stored, tag=tag)
        out = tmp_path / f"{name}_out.dcm"
        restore_path(src, out, task="ct", device="cpu")
        results[name] = read(out).array[0]
    outside = _outside((512, 512))
    assert np.all(results["padded"][outside] == -3024)
    assert np.abs(results["padded"] - results["air"])[~outside].max() <= 1.0
