"""`make_partitioner`: method choice, the auto fallback, precomputed maps, bad options."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from ratcli.errors import GeometryMismatchError, UsageError, WeightsNotFoundError
from ratcli.regions import (
    FALLBACK_MESSAGE,
    CachedPartitioner,
    ClassicalPartitioner,
    NonePartitioner,
    make_partitioner,
    upscale_labels,
)
from ratcli.regions.sam import SamPartitioner, build_sam
from ratcli.weights import REPO_WEIGHTS_DIR


@pytest.fixture
def no_sam(tmp_path, monkeypatch):
    """No SAM anywhere: empty RAT_HOME, no RAT_SAM_CHECKPOINT, repo weights dir checked."""
    monkeypatch.setenv("RAT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RAT_SAM_CHECKPOINT", raising=False)
    monkeypatch.delenv("RAT_MANIFEST", raising=False)
    from ratcli.weights import find_sam_checkpoint

    if find_sam_checkpoint() is not None:
        pytest.skip("a SAM checkpoint is installed in the repository weights dir")
    return tmp_path / "home"


def test_auto_without_sam_falls_back_to_classical(no_sam):
    part = make_partitioner("auto")
    assert isinstance(part, CachedPartitioner) and part.name == "classical"
    assert part.fallback == FALLBACK_MESSAGE and "\n" not in part.fallback
    # SAM-only settings are ignored by the fallback, classical ones are used
    part = make_partitioner("auto", cache=False, points_per_side=8, threshold=1e-4)
    assert isinstance(part, ClassicalPartitioner) and part.settings["threshold"] == 1e-4
    assert make_partitioner("classical").fallback is None


def test_sam_without_checkpoint_is_a_clear_error(no_sam):
    with pytest.raises(WeightsNotFoundError, match="no SAM checkpoint configured"):
        make_partitioner("sam")


def test_auto_finds_sam_in_weights_dir_and_environment(no_sam, monkeypatch):
    no_sam.mkdir(parents=True)
    ckpt = no_sam / "sam_vit_b_01ec64.pth"  # the official name: found by the manifest
    torch.manual_seed(0)
    torch.save(build_sam(embed_dim=32, depth=1, num_heads=1, global_attn_indexes=(0,),
                         image_size=64).state_dict(), ckpt)
    # a stand-in under the official name: every load checks the manifest's sha256
    manifest = json.loads((REPO_WEIGHTS_DIR / "manifest.json").read_text())
    manifest["weights"]["sam-vit-b"]["sha256"] = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    (no_sam.parent / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("RAT_MANIFEST", str(no_sam.parent / "manifest.json"))
    part = make_partitioner("auto", cache=False, threshold=1.0)  # classical setting ignored
    assert isinstance(part, SamPartitioner) and part.checkpoint == ckpt
    assert part.fallback is None
    other = no_sam / "elsewhere.pth"
    other.write_bytes(ckpt.read_bytes())
    monkeypatch.setenv("RAT_SAM_CHECKPOINT", str(other))
    assert make_partitioner("auto", cache=False).checkpoint == other
    assert make_partitioner("sam", cache=False, sam_checkpoint=ckpt).checkpoint == ckpt
    with pytest.raises(UsageError, match="threshold is not a setting of the sam partitioner"):
        make_partitioner("sam", threshold=1.0)


def test_none_and_precomputed(no_sam, tmp_path):
    none = make_partitioner("none")
    assert isinstance(none, NonePartitioner)
    assert (none(np.ones((5, 7), np.float32)) == 0).all()
    maps = np.arange(2 * 4 * 6, dtype=np.int32).reshape(2, 4, 6) % 5
    np.save(tmp_path / "maps.npy", maps)
    pre = make_partitioner(str(tmp_path / "maps.npy"))
    np.testing.assert_array_equal(pre.partition_volume(np.zeros((2, 4, 6), np.float32)), maps)
    with pytest.raises(GeometryMismatchError, match="maps.npy: label maps are 2x4x6"):
        pre.partition_volume(np.zeros((2, 4, 5), np.float32))
    # slice by slice, in order (as inference calls it), upscaled for an x2 SR input
    assert [int((pre(np.zeros((4, 6), np.float32)) == maps[z]).all()) for z in (0, 1)] == [1, 1]
    np.testing.assert_array_equal(pre(np.zeros((8, 12), np.float32)),
                                  np.repeat(np.repeat(maps[0], 2, 0), 2, 1))
    with pytest.raises(GeometryMismatchError, match="the image is 5x6"):
        pre(np.zeros((5, 6), np.float32))
    np.save(tmp_path / "one.npy", maps[0])
    np.testing.assert_array_equal(make_partitioner(str(tmp_path / "one.npy"))(
        np.zeros((4, 6), np.float32)), maps[0])


def test_bad_method_and_setting(no_sam):
    with pytest.raises(UsageError, match="must be one of auto, litemedsam, sam, classical, none"):
        make_partitioner("slic")
    with pytest.raises(UsageError, match="n_segmentz is not a setting of the classical"):
        make_partitioner("classical", n_segmentz=10)


def test_upscale_labels():
    labels = np.array([[1, 2], [3, 4]], dtype=np.int32)
    up = upscale_labels(labels, 2)
    assert up.shape == (4, 4) and (up[:2, :2] == 1).all() and (up[2:, 2:] == 4).all()
    assert upscale_labels(labels[None], 4).shape == (1, 8, 8)
