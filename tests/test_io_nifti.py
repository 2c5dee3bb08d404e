"""NIfTI: geometry kept exactly, 2D and 3D, bad voxels rejected."""

import numpy as np
import pytest
import SimpleITK as sitk

from ratcli.errors import InputFormatError
from ratcli.io import Domain, find_inputs, read, write
from ratcli.phantoms import pet_phantom


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _write_sitk(path, arr, spacing, origin, direction):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return sitk.ReadImage(str(path))  # geometry as stored (float32 in the header)


@pytest.mark.parametrize("name", ["vol.nii.gz", "vol.nii"])
def test_3d_geometry_kept_exactly(tmp_path, name):
    vol = pet_phantom(size=24, slices=6).astype(np.float32)
    direction = tuple(_rotation(0.3, -0.2, 0.7).ravel())
    ref = _write_sitk(tmp_path / name, vol, (3.1, 2.9, 4.27), (-101.5, 33.25, 7.0), direction)
    img = read(tmp_path / name)
    assert img.array.shape == (6, 24, 24) and img.domain is Domain.GREY
    assert img.spacing == ref.GetSpacing() and img.origin == ref.GetOrigin()
    assert img.direction == ref.GetDirection()
    np.testing.assert_array_equal(img.array, vol)

    out = write(img.derived(img.array * 0.5), tmp_path / "out" / name,
                provenance={"task": "pet", "weights_sha256": "ab" * 32})
    back = sitk.ReadImage(str(out))
    assert back.GetSpacing() == ref.GetSpacing()
    assert back.GetOrigin() == ref.GetOrigin()
    assert back.GetDirection() == ref.GetDirection()
    assert back.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), vol * 0.5)
    assert "task=pet" in back.GetMetaData("descrip")
    if name.endswith(".gz"):
        assert out.read_bytes()[:2] == b"\x1f\x8b"


def test_resampled_grid_written_from_image_geometry(tmp_path):
    direction = tuple(_rotation(0.1, 0.2, -0.4).ravel())
    _write_sitk(tmp_path / "v.nii.gz", np.zeros((3, 8, 8), np.float32), (2.0, 2.0, 3.0),
                (5.0, 6.0, 7.0), direction)
    img = read(tmp_path / "v.nii.gz")
    up = img.derived(np.zeros((3, 16, 16), np.float32), scale=2)
    back = sitk.ReadImage(str(write(up, tmp_path / "up.nii.gz")))
    assert back.GetSize() == (16, 16, 3)
    np.testing.assert_allclose(back.GetSpacing(), up.spacing, atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), up.origin, atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), up.direction, atol=1e-6)


def test_2d_stays_2d(tmp_path):
    arr = np.arange(15, dtype=np.int16).reshape(3, 5)
    ref = _write_sitk(tmp_path / "s.nii", arr, (0.5, 0.25), (1.0, -2.0), (0.0, 1.0, 1.0, 0.0))
    img = read(tmp_path / "s.nii")
    assert img.array.shape == (1, 3, 5) and img.array.dtype == np.float32
    assert img.spacing == (0.5, 0.25, 1.0) and img.origin == (1.0, -2.0, 0.0)
    out = write(img, tmp_path / "o.nii")
    back = sitk.ReadImage(str(out))
    assert back.GetDimension() == 2
    assert back.GetSpacing() == ref.GetSpacing() and back.GetOrigin() == ref.GetOrigin()
    assert back.GetDirection() == ref.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), arr)


def test_tiny_1x1(tmp_path):
    _write_sitk(tmp_path / "t.nii.gz", np.ones((1, 1, 1), np.float32), (1, 1, 1), (0, 0, 0),
                tuple(np.eye(3).ravel()))
    img = read(tmp_path / "t.nii.gz")
    assert img.array.shape == (1, 1, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_rejected(tmp_path, bad):
    arr = np.zeros((2, 4, 4), np.float32)
    arr[1, 2, 3] = bad
    _write_sitk(tmp_path / "bad.nii.gz", arr, (1, 1, 1), (0, 0, 0), tuple(np.eye(3).ravel()))
    with pytest.raises(InputFormatError, match=r"bad.nii.gz: 1 voxels are NaN or infinite"):
        read(tmp_path / "bad.nii.gz")


def test_corrupt_and_4d(tmp_path):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    (src,) = find_inputs(junk)
    with pytest.raises(InputFormatError, match="junk.nii.gz"):
        read(src)
    img4 = sitk.Image([2, 2, 2, 2], sitk.sitkFloat32)
    sitk.WriteImage(img4, str(tmp_path / "t4.nii"))
    with pytest.raises(InputFormatError, match="4D"):
        read(tmp_path / "t4.nii")
