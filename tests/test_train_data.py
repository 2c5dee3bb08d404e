"""Training data: paired folders, simulated single-quality data, synthetic specs, splits,
and patches cut consistently from input, target and region map."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from ratcli.errors import GeometryMismatchError, InputNotFoundError, UsageError
from ratcli.io.image import Domain, Image
from ratcli.phantoms import ct_phantom, he_tile
from ratcli.tasks import get_task
from ratcli.training.data import VolumePair, load_pairs, parse_data_spec, split_pairs
from ratcli.training.degrade import BicubicDown, LowDoseCT, make_degradation
from ratcli.training.patches import PatchDataset, TrainSlice, prepare_slices, region_map


def _nifti(path, arr, spacing=(2.0, 2.0, 3.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def test_paired_folders_match_by_relative_path(tmp_path):
    for rel in ("a.nii.gz", "sub/b.nii.gz"):
        full = ct_phantom(32, 3, seed=len(rel))
        _nifti(tmp_path / "full" / rel, full)
        _nifti(tmp_path / "low" / rel, full + 7.0)
    spec = parse_data_spec(tmp_path)
    assert spec.kind == "paired"
    pairs = load_pairs(spec, get_task("ct"), degradation=None)
    assert [p.name for p in pairs] == ["a.nii.gz", "sub/b.nii.gz"]
    for p in pairs:
        assert np.allclose(p.input.array - p.target.array, 7.0, atol=1e-3)
        assert p.input.array.shape == (3, 32, 32)


def test_paired_folders_report_missing_and_mismatched_files(tmp_path):
    _nifti(tmp_path / "full" / "a.nii.gz", np.zeros((2, 32, 32)))
    _nifti(tmp_path / "low" / "b.nii.gz", np.zeros((2, 32, 32)))
    # every unpaired file is named, on either side
    with pytest.raises(InputNotFoundError, match=r"2 unpaired file\(s\): low/b.nii.gz .*"
                                                 r"full/a.nii.gz \(no low/a.nii.gz\)"):
        load_pairs(parse_data_spec(tmp_path), get_task("ct"), degradation=None)
    _nifti(tmp_path / "low" / "a.nii.gz", np.zeros((2, 32, 30)))
    notes: list[str] = []
    with pytest.raises(GeometryMismatchError, match="full/a.nii.gz"):
        load_pairs(parse_data_spec(tmp_path), get_task("ct"), degradation=None,
                   allow_unpaired=True, on_note=notes.append)  # b left out, with a note
    assert notes and "low/b.nii.gz (no full/b.nii.gz)" in notes[0]


def test_single_quality_folder_is_degraded_reproducibly_at_its_pixel_size(tmp_path):
    _nifti(tmp_path / "ct.nii.gz", ct_phantom(32, 2), spacing=(5.0, 5.0, 2.0))
    spec = parse_data_spec(tmp_path)
    assert spec.kind == "single"
    sim = LowDoseCT(dose=0.25, photons=1e5, views=60)
    a = load_pairs(spec, get_task("ct"), degradation=sim, seed=3)[0]
    b = load_pairs(spec, get_task("ct"), degradation=sim, seed=3)[0]
    c = load_pairs(spec, get_task("ct"), degradation=sim, seed=4)[0]
    assert np.array_equal(a.input.array, b.input.array)
    assert not np.array_equal(a.input.array, c.input.array)
    assert 1.0 < np.std(a.input.array - a.target.array) < 200.0
    # the simulation used the file's 5 mm pixels: the same noise seed at 0.7 mm differs
    manual = LowDoseCT(dose=0.25, photons=1e5, views=60, pixel_mm=5.0)
    rng = np.random.default_rng([3, 0])
    assert np.allclose(manual(a.target.array[0], rng), a.input.array[0])
    # more realisations: the first is the one above, the others new noise, same target
    many = load_pairs(spec, get_task("ct"), degradation=sim, seed=3, realizations=3)
    assert [p.name for p in many] == [a.name, a.name + "#sim1", a.name + "#sim2"]
    assert np.array_equal(many[0].input.array, a.input.array)
    assert not np.array_equal(many[1].input.array, many[2].input.array)
    assert all(p.target is many[0].target for p in many)


def test_sr_tiff_folder_gives_low_resolution_inputs(tmp_path):
    tifffile.imwrite(tmp_path / "tile.tif", he_tile(50), photometric="rgb")  # 50: cropped to 48
    task = get_task("sr-x4")
    (pair,) = load_pairs(parse_data_spec(tmp_path), task, degradation=BicubicDown(scale=4))
    assert pair.target.array.shape == (1, 48, 48, 3)
    assert pair.input.array.shape == (1, 12, 12, 3) and pair.input.array.dtype == np.uint8
    assert pair.input.spacing[0] == pytest.approx(4 * pair.target.spacing[0])


@pytest.mark.parametrize("text, match", [
    ("synthetic:mri", "synthetic:ct"),
    ("synthetic:ct,slices=x", "bad option"),
    ("synthetic:ct,size=8", "size >= 16"),
])
def test_bad_data_specs(text, match):
    with pytest.raises(UsageError, match=match):
        parse_data_spec(text)


def test_missing_data_path(tmp_path):
    with pytest.raises(InputNotFoundError, match="nope"):
        parse_data_spec(tmp_path / "nope")


def test_synthetic_spec_and_held_out_split():
    spec = parse_data_spec("synthetic:pet,volumes=3,slices=2,size=24,seed=5")
    assert (spec.volumes, spec.slices, spec.size, spec.seed) == (3, 2, 24, 5)
    pairs = load_pairs(spec, get_task("pet"), degradation=make_degradation(get_task("pet")))
    assert [p.name for p in pairs] == ["synthetic/pet-5", "synthetic/pet-6", "synthetic/pet-7"]
    train, val = split_pairs(pairs)
    assert [p.name for p in val] == ["synthetic/pet-7"] and len(train) == 2
    (one,) = load_pairs(parse_data_spec("synthetic:ct,volumes=1,slices=10,size=16"),
                        get_task("ct"), degradation=LowDoseCT(views=30))
    head, tail = split_pairs([one])
    assert head[0].target.num_slices == 9 and tail[0].target.num_slices == 1
    with pytest.raises(UsageError, match="--val"):
        split_pairs([VolumePair("x", _grey(1), _grey(1))])


def _grey(z: int) -> Image:
    return Image(np.zeros((z, 16, 16), np.float32), domain=Domain.HU)


def _sr_slice() -> TrainSlice:
    """A slice whose input is the exact 2x2 box average of the target, with regions that
    encode the target's pixel positions, so misaligned crops are detectable."""
    rng = np.random.default_rng(0)
    target = rng.random((3, 40, 48), dtype=np.float32)
    inp = target.reshape(3, 20, 2, 24, 2).mean(axis=(2, 4))
    regions = np.arange(40 * 48).reshape(40, 48)
    return TrainSlice(inp, target, regions, "s[0]")


def test_patches_are_consistent_across_input_target_and_regions():
    s = _sr_slice()
    ds = PatchDataset([s], patch=16, scale=2, seed=1, length=40)
    for i in range(len(ds)):
        inp, tgt, reg, _ = (t.numpy() for t in ds[i])
        assert inp.shape == (3, 8, 8) and tgt.shape == (3, 16, 16) and reg.shape == (16, 16)
        # rot90/flip commute with box averaging: the input still matches the target
        assert np.allclose(tgt.reshape(3, 8, 2, 8, 2).mean(axis=(2, 4)), inp, atol=1e-6)
        # regions moved with the target: each region label names the target pixel it was
        ys, xs = np.divmod(reg, 48)
        assert np.array_equal(tgt, s.target[:, ys, xs])


def test_patches_are_reproducible_per_epoch_and_augmented():
    ds = PatchDataset([_sr_slice()], patch=16, scale=2, seed=1, length=64)
    first = [ds[i][1].numpy() for i in range(8)]
    assert all(np.array_equal(a, ds[i][1].numpy()) for i, a in enumerate(first))
    ds.set_epoch(1)
    assert not all(np.array_equal(a, ds[i][1].numpy()) for i, a in enumerate(first))
    # augmentation happens: some patches' region labels run against the stored layout
    ds.set_epoch(0)
    steps = {tuple(np.sign(np.diff(ds[i][2].numpy()[0, :2])).tolist()) for i in range(64)}
    assert len(steps) > 1
    with pytest.raises(UsageError, match="smaller"):
        PatchDataset([_sr_slice()], patch=64, scale=2)


def test_prepare_slices_normalise_by_the_input_and_regions_follow_inference():
    task = get_task("sr-x2")
    tiles = np.stack([he_tile(32, seed=s) for s in range(2)])
    target = Image(tiles, domain=Domain.RGB8)
    low = np.stack([BicubicDown(scale=2)(t, np.random.default_rng(0)) for t in tiles])
    pair = VolumePair("t", Image(low, domain=Domain.RGB8), target)
    calls = []

    def partitioner(arr):
        calls.append(arr)
        return (arr[..., 0] > 128).astype(np.int32)

    slices = prepare_slices([pair], task, partitioner=partitioner)
    assert len(slices) == 2 and slices[0].input.shape == (3, 16, 16)
    assert np.allclose(slices[0].target * 255, np.moveaxis(tiles[0], -1, 0))
    assert calls[0].shape == (32, 32, 3) and calls[0].dtype == np.uint8  # upsampled RGB
    assert slices[0].regions.shape == (32, 32)
    grey = region_map(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32), scale=1,
                      partitioner=None)
    assert grey.shape == (8, 8) and not grey.any()
