"""`rat regions`: label maps and overlays for a CT slice, a NIfTI volume and a slide tile."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
import torch
from PIL import Image as PILImage
from typer.testing import CliRunner

from ratcli.cli import app
from ratcli.io import read
from ratcli.phantoms import ct_phantom, he_tile
from ratcli.regions import ClassicalPartitioner
from ratcli.regions.overlay import BOUNDARY_RGB
from ratcli.regions.sam import build_sam


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Inputs on disk, a private cache, and no SAM checkpoint anywhere."""
    monkeypatch.setenv("RAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAT_SAM_CHECKPOINT", raising=False)
    ct = ct_phantom(128, 4)
    vol = sitk.GetImageFromArray(ct)
    vol.SetSpacing((0.8, 0.8, 2.5))
    vol.SetOrigin((-50.0, -40.0, 10.0))
    sitk.WriteImage(vol, str(tmp_path / "vol.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(ct[1]), str(tmp_path / "slice.nii.gz"))
    tifffile.imwrite(tmp_path / "tile.tif", he_tile(256), photometric="rgb")
    return tmp_path


def rat(*args):
    return CliRunner().invoke(app, ["regions", *args])


def overlay_pixels(path):
    png = np.asarray(PILImage.open(path))
    assert png.dtype == np.uint8 and png.shape[-1] == 3
    return png, (png == BOUNDARY_RGB).all(-1)


def test_ct_slice_label_map_and_overlay(env):
    result = rat(str(env / "slice.nii.gz"), "-o", str(env / "out" / "slice_labels.nii.gz"),
                 "--overlay", str(env / "out" / "slice.png"), "--task", "ct")
    assert result.exit_code == 0, result.stderr
    labels = read(env / "out" / "slice_labels.nii.gz").array
    assert labels.shape == (1, 128, 128)
    # the same labels as the library gives on the task-normalised slice
    expected = ClassicalPartitioner()((ct_phantom(128, 4)[1] + 1024.0) / 4096.0)
    np.testing.assert_array_equal(labels[0], expected)
    assert 5 <= len(np.unique(labels)) <= 100
    png, boundary = overlay_pixels(env / "out" / "slice.png")
    # a 128-px slice is shown 4x (512 px) with 1-px boundaries, so it can be read
    assert png.shape == (512, 512, 3) and 0.005 < boundary.mean() < 0.2
    # one warning line: no SAM, classical fallback
    assert result.stderr.count("warning:") == 1 and "classical" in result.stderr


def test_nifti_volume_keeps_geometry(env):
    result = rat(str(env / "vol.nii.gz"), "-o", str(env / "labels"), "--overlay",
                 str(env / "ov.png"), "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "ok" and record["output"] == str(env / "labels" / "vol.nii.gz")
    lo, _, hi = record["regions"]
    assert 5 <= lo <= hi <= 100
    out = sitk.ReadImage(str(env / "labels" / "vol.nii.gz"))
    assert out.GetSize() == (128, 128, 4)
    assert np.allclose(out.GetSpacing(), (0.8, 0.8, 2.5))
    assert np.allclose(out.GetOrigin(), (-50.0, -40.0, 10.0))
    labels = sitk.GetArrayFromImage(out)
    assert (labels == np.rint(labels)).all() and labels.min() >= 1
    png, boundary = overlay_pixels(env / "ov.png")
    assert png.shape == (512, 4 * 512 + 3 * 2, 3)  # 4 slices (4x) side by side, 2-px gaps
    assert boundary.any()


def test_slide_tile_png_labels_and_tiling(env):
    result = rat(str(env / "tile.tif"), "-o", str(env / "tile_labels.png"),
                 "--overlay", str(env / "tile_overlay.png"))
    assert result.exit_code == 0, result.stderr
    stored = np.asarray(PILImage.open(env / "tile_labels.png"))
    assert stored.shape == (256, 256) and stored.dtype == np.uint16
    np.testing.assert_array_equal(stored, ClassicalPartitioner()(he_tile(256)))
    png, boundary = overlay_pixels(env / "tile_overlay.png")
    assert png.shape == (512, 512, 3) and boundary.any()
    # a slide-sized image is partitioned tile by tile; no region spans two tiles
    tiled = rat(str(env / "tile.tif"), "-o", str(env / "tiled.tif"), "--tile", "128")
    assert tiled.exit_code == 0, tiled.stderr
    labels = tifffile.imread(env / "tiled.tif")
    quads = [labels[:128, :128], labels[:128, 128:], labels[128:, :128], labels[128:, 128:]]
    sets = [set(np.unique(q)) for q in quads]
    assert all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:])


def test_second_run_uses_cache_and_labels_feed_back(env, monkeypatch):
    calls = []
    original = ClassicalPartitioner._partition
    monkeypatch.setattr(ClassicalPartitioner, "_partition",
                        lambda self, s: calls.append(1) or original(self, s))
    assert rat(str(env / "vol.nii.gz"), "-o", str(env / "a.nii.gz")).exit_code == 0
    assert len(calls) == 4
    assert rat(str(env / "vol.nii.gz"), "-o", str(env / "b.nii.gz")).exit_code == 0
    assert len(calls) == 4  # every slice from the cache
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(env / "a.nii.gz")))
    np.testing.assert_array_equal(a, sitk.GetArrayFromImage(sitk.ReadImage(str(env / "b.nii.gz"))))
    # a written label map is a valid --regions PATH
    again = rat(str(env / "vol.nii.gz"), "-o", str(env / "c.nii.gz"), "--regions",
                str(env / "a.nii.gz"))
    assert again.exit_code == 0 and "warning" not in again.stderr
    np.testing.assert_array_equal(a, sitk.GetArrayFromImage(sitk.ReadImage(str(env / "c.nii.gz"))))


def test_errors_are_one_line_with_exit_codes(env):
    first = rat(str(env / "slice.nii.gz"), "-o", str(env / "s.nii.gz"))
    assert first.exit_code == 0
    exists = rat(str(env / "slice.nii.gz"), "-o", str(env / "s.nii.gz"))
    assert exists.exit_code == 1 and "output exists (use --overwrite" in exists.stderr
    assert rat(str(env / "slice.nii.gz"), "-o", str(env / "s.nii.gz"),
               "--overwrite").exit_code == 0
    no_sam = rat(str(env / "slice.nii.gz"), "-o", str(env / "t.nii.gz"), "--regions", "sam")
    assert no_sam.exit_code == 1 and "no SAM checkpoint configured" in no_sam.stderr
    bad = rat(str(env / "slice.nii.gz"), "-o", str(env / "t.nii.gz"), "--regions", "slic")
    assert bad.exit_code == 2 and "--regions must be one of" in bad.stderr
    missing = rat(str(env / "nope.nii.gz"), "-o", str(env / "t.nii.gz"))
    assert missing.exit_code == 1 and "nope.nii.gz" in missing.stderr
    for r in (exists, no_sam, bad, missing):
        assert len([line for line in r.stderr.splitlines() if "error" in line]) == 1


def test_sam_through_the_cli(env):
    torch.manual_seed(0)
    ckpt = env / "tiny_sam.pth"
    torch.save(build_sam(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,),
                         image_size=256).state_dict(), ckpt)
    result = rat(str(env / "slice.nii.gz"), "-o", str(env / "sam.nii.gz"), "--regions", "sam",
                 "--sam-checkpoint", str(ckpt), "--points-per-side", "4", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr
    labels = read(env / "sam.nii.gz").array
    assert labels.shape == (1, 128, 128) and labels.min() >= 1
