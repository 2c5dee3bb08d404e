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


@pytest.mark.slow
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


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_unusable_cache_warns_once_and_goes_on_without_caching(tmp_path, monkeypatch, kind):
    import os

    if kind == "file":
        target = tmp_path / "cache"
        target.write_text("a file, not a folder")
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
        if os.geteuid() == 0:  # root writes into read-only folders: the OS answer simulated
            import errno
            import tempfile

            def denied(*args, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied")

            monkeypatch.setattr(tempfile, "NamedTemporaryFile", denied)
    monkeypatch.setenv("RAT_CACHE", str(target))
    part = make_partitioner("classical")
    assert isinstance(part, CachedPartitioner) and not part.cache.enabled
    assert part.fallback is not None and str(target) in part.fallback
    assert "without caching" in part.fallback and "\n" not in part.fallback
    vol = volume()
    labels = part.partition_volume(vol)  # no exception: every input still works
    np.testing.assert_array_equal(labels, make_partitioner("classical", cache=False)
                                  .partition_volume(vol))
    assert (part.hits, part.misses) == (0, 2)
    part.partition_volume(vol)
    assert part.misses == 4  # nothing was stored
    assert not list(tmp_path.rglob("*.npz"))


def test_sam_fallback_and_cache_warning_both_reported_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("file")
    monkeypatch.setenv("RAT_CACHE", str(tmp_path / "cache"))
    part = make_partitioner("auto")  # no SAM checkpoint: classical fallback
    from ratcli.regions.factory import FALLBACK_MESSAGE

    assert part.fallback.startswith(FALLBACK_MESSAGE + "; ")
    assert part.fallback.endswith("not usable (it is a file, not a folder); going on without "
                                  "caching (set RAT_CACHE to a writable folder, or RAT_NO_CACHE=1)")


def test_cache_that_fails_while_writing_turns_itself_off(tmp_path, monkeypatch):
    import errno

    cache = RegionCache(tmp_path)
    assert cache.enabled and cache.warning is None

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    cache.put("ab" * 32, np.zeros((4, 4), np.int32))
    assert not cache.enabled and "No space left on device" in cache.warning
    assert not list(tmp_path.rglob("*.npz")) and not list(tmp_path.rglob(".rat-tmp-*"))


@pytest.mark.parametrize("how", ["env", "argument"])
def test_cache_can_be_disabled(tmp_path, monkeypatch, how):
    monkeypatch.setenv("RAT_CACHE", str(tmp_path / "c"))
    if how == "env":
        monkeypatch.setenv("RAT_NO_CACHE", "1")
        part = make_partitioner("classical")
    else:
        part = CachedPartitioner(make_partitioner("classical", cache=False),
                                 RegionCache(enabled=False))
    vol = volume()
    part.partition_volume(vol)
    part.partition_volume(vol)
    assert (part.hits, part.misses) == (0, 4)
    assert part.fallback is None  # disabled on purpose: nothing to warn about
    assert not (tmp_path / "c").exists()
    monkeypatch.setenv("RAT_NO_CACHE", "0")
    assert RegionCache(tmp_path / "c").enabled
