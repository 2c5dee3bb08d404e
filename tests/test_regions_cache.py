"""Region-map cache: SAM runs once per slice across runs; settings are part of the key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator

import ratcli.regions.sam as sam_module
from ratcli.phantoms import ct_phantom
from ratcli.regions import CachedPartitioner, RegionCache, make_partitioner
from ratcli.regions.sam import SamPartitioner, build_sam

SETTINGS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
            "box_nms_thresh": 1.0, "device": "cpu"}


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(build_sam(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,),
                         image_size=256).state_dict(), path)
    return path


@pytest.fixture
def spy(monkeypatch):
    """Counts SAM model loads and mask-generator runs (the real ones still run)."""
    calls = {"load": 0, "generate": 0}
    load, generate = sam_module.load_sam, SamAutomaticMaskGenerator.generate

    def counting_load(*args, **kwargs):
        calls["load"] += 1
        return load(*args, **kwargs)

    def counting_generate(self, image):
        calls["generate"] += 1
        return generate(self, image)

    monkeypatch.setattr(sam_module, "load_sam", counting_load)
    monkeypatch.setattr(SamAutomaticMaskGenerator, "generate", counting_generate)
    return calls


def volume() -> np.ndarray:
    return (ct_phantom(64, 2) + 1024.0) / 4096.0


def test_second_run_hits_cache_and_sam_is_not_called(tiny_sam, spy, tmp_path):
    vol = volume()
    first = make_partitioner("sam", sam_checkpoint=str(tiny_sam), cache_dir=tmp_path,
                             **SETTINGS)
    labels = first.partition_volume(vol)
    assert spy == {"load": 1, "generate": 2}
    assert (first.hits, first.misses) == (0, 2)
    assert len(list(tmp_path.rglob("*.npz"))) == 2 and not list(tmp_path.rglob(".*"))  # no temps

    second = make_partitioner("sam", sam_checkpoint=str(tiny_sam), cache_dir=tmp_path,
                              **SETTINGS)
    again = second.partition_volume(vol)
    assert spy == {"load": 1, "generate": 2}  # SAM neither loaded nor run
    assert (second.hits, second.misses) == (2, 0)
    np.testing.assert_array_equal(again, labels)
    # one slice through __call__, and the same pixels in HU (same uint8 window): hit
    np.testing.assert_array_equal(second(vol[1]), labels[1])
    np.testing.assert_array_equal(second(vol[1] * 4096.0 - 1024.0), labels[1])
    assert spy["generate"] == 2


def test_changed_setting_misses_cache(tiny_sam, spy, tmp_path):
    vol = volume()
    make_partitioner("sam", sam_checkpoint=str(tiny_sam), cache_dir=tmp_path,
                     **SETTINGS).partition_volume(vol)
    changed = make_partitioner("sam", sam_checkpoint=str(tiny_sam), cache_dir=tmp_path,
                               **{**SETTINGS, "points_per_side": 3})
    changed.partition_volume(vol)
    assert spy["generate"] == 4 and (changed.hits, changed.misses) == (0, 2)
    # a different method with the same pixels is a different key too
    classical = make_partitioner("classical", cache_dir=tmp_path)
    classical.partition_volume(vol)
    assert (classical.hits, classical.misses) == (0, 2)
    assert len(list(tmp_path.rglob("*.npz"))) == 6


def test_only_missing_slices_are_computed(tmp_path):
    part = make_partitioner("classical", cache_dir=tmp_path)
    vol = volume()
    part(vol[0])
    labels = part.partition_volume(vol)
    assert (part.hits, part.misses) == (1, 2)
    np.testing.assert_array_equal(labels[0], part(vol[0]))


def test_unreadable_entry_is_recomputed(tmp_path):
    part = make_partitioner("classical", cache_dir=tmp_path)
    s = volume()[0]
    labels = part(s)
    (entry,) = tmp_path.rglob("*.npz")
    entry.write_bytes(b"truncated")
    np.testing.assert_array_equal(part(s), labels)
    assert part.misses == 2
    assert np.load(entry)["labels"].shape == (64, 64)  # rewritten whole


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RAT_CACHE", str(tmp_path / "c"))
    part = make_partitioner("classical")
    assert isinstance(part, CachedPartitioner)
    part(volume()[0])
    assert len(list((tmp_path / "c").rglob("*.npz"))) == 1
    key = RegionCache.key(np.zeros((2, 2), np.uint8), "classical", {"a": 1})
    assert key != RegionCache.key(np.zeros((2, 2), np.uint8), "classical", {"a": 2})
    assert key != RegionCache.key(np.zeros((2, 2), np.uint8), "sam", {"a": 1})


def test_second_rat_denoise_hits_cache(tiny_sam, spy, tmp_path, monkeypatch):
    """Acceptance: `rat denoise --regions sam` twice on one input runs SAM once; another
    SAM checkpoint (a changed setting) misses."""
    import SimpleITK as sitk
    from typer.testing import CliRunner

    from ratcli.cli import app
    from ratcli.models import RATConfig, build_rat, save_checkpoint

    cfg = RATConfig(width=8, num_heads=2, num_groups=1, layers_per_group=1)
    save_checkpoint(tmp_path / "ct.pt", build_rat(cfg), cfg, meta={"task": "ct"})
    sitk.WriteImage(sitk.GetImageFromArray(ct_phantom(64, 2)), str(tmp_path / "in.nii.gz"))
    monkeypatch.setenv("RAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAT_SAM_CHECKPOINT", str(tiny_sam))
    # `rat denoise` has no SAM-grid option; a 4x4 grid instead of 32x32 keeps this fast
    monkeypatch.setitem(SamPartitioner.__init__.__kwdefaults__, "points_per_side", 4)

    def denoise(out: str):
        result = CliRunner().invoke(app, [
            "denoise", str(tmp_path / "in.nii.gz"), "-o", str(tmp_path / out), "--task", "ct",
            "--weights", str(tmp_path / "ct.pt"), "--regions", "sam", "--device", "cpu"])
        assert result.exit_code == 0, result.stderr
        return sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / out)))

    first = denoise("a.nii.gz")
    assert spy == {"load": 1, "generate": 2}  # one SAM run per slice
    second = denoise("b.nii.gz")
    assert spy == {"load": 1, "generate": 2}  # all slices from the cache
    np.testing.assert_array_equal(first, second)
    other = tmp_path / "other_sam.pth"
    other.write_bytes(tiny_sam.read_bytes())
    monkeypatch.setenv("RAT_SAM_CHECKPOINT", str(other))
    denoise("c.nii.gz")
    assert spy == {"load": 2, "generate": 4}
