"""The real SAM path with a tiny randomly initialised SAM, and the mask-to-label rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ratcli.errors import CheckpointError
from ratcli.phantoms import ct_phantom
from ratcli.regions.sam import SamPartitioner, build_sam, load_sam, masks_to_labels

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,)}
# Thresholds off and NMS disabled (IoU never exceeds 1.0): a random SAM then returns
# many overlapping masks, which exercises the painting order.
LOOSE = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
         "box_nms_thresh": 1.0, "device": "cpu"}


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    """A randomly initialised SAM (ViT: width 64, depth 2, 2 heads, one global block),
    saved as a plain state dict like the official files. The encoder input is 256 px:
    SamPredictor resizes to the encoder's own img_size, so this works like 1024."""
    torch.manual_seed(0)
    model = build_sam(**TINY, image_size=256)
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def expected_labels(masks: list[np.ndarray]) -> np.ndarray:
    """Per pixel, by brute force: 1-based rank (largest area first, ties by order) of the
    smallest covering mask; n + 1 where nothing covers."""
    n = len(masks)
    rank = {k: r for r, k in enumerate(sorted(range(n), key=lambda k: -masks[k].sum()), 1)}
    out = np.full(masks[0].shape, n + 1, dtype=np.int32)
    for y, x in np.ndindex(out.shape):
        covering = [rank[k] for k in range(n) if masks[k][y, x]]
        if covering:
            out[y, x] = max(covering)
    return out


def test_masks_to_labels_on_overlapping_masks():
    m = np.zeros((4, 6, 8), dtype=bool)
    m[0, :, :6] = True  # big, area 36
    m[1, 1:4, 1:4] = True  # inside the big one, area 9
    m[2, 2:5, 3:8] = True  # overlaps both, area 15
    m[3, 5, 7] = True  # single pixel outside the big mask, area 1
    labels = masks_to_labels([{"segmentation": s, "area": int(s.sum())} for s in m], (6, 8))
    assert labels.dtype == np.int32 and labels.shape == (6, 8)
    # sorted by area: m0 -> 1, m2 -> 2, m1 -> 3, m3 -> 4; uncovered -> 5
    assert labels[0, 0] == 1  # only the big mask
    assert labels[1, 1] == 3  # small inside big
    assert labels[2, 3] == 3  # m1 (area 9) painted after m2 (area 15)
    assert labels[4, 4] == 2  # m2 over the big one
    assert labels[4, 7] == 2  # m2 outside the big one
    assert labels[5, 7] == 4
    assert labels[0, 7] == 5  # uncovered
    np.testing.assert_array_equal(labels, expected_labels(list(m)))


def test_masks_to_labels_edge_cases():
    assert (masks_to_labels([], (3, 3)) == 1).all()  # nothing covered: one region, n + 1
    a = np.zeros((3, 3), bool)
    a[0] = True
    b = np.zeros((3, 3), bool)
    b[1] = True  # same area as a: a keeps label 1 (stable order)
    labels = masks_to_labels([a, b], (3, 3))
    assert labels[0, 0] == 1 and labels[1, 0] == 2 and labels[2, 0] == 3
    with pytest.raises(ValueError, match="does not match"):
        masks_to_labels([a], (4, 4))


def test_loader_reads_architecture_from_weights(tiny_sam, tmp_path):
    path, state = tiny_sam
    model = load_sam(path)
    enc = model.image_encoder
    assert enc.img_size == 256 and len(enc.blocks) == 2
    assert enc.blocks[0].window_size == 14 and enc.blocks[1].window_size == 0  # global
    assert enc.blocks[0].attn.num_heads == 2
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    # the official encoder input size is inferred too
    torch.save(build_sam(**TINY, image_size=1024).state_dict(), tmp_path / "big.pth")
    assert load_sam(tmp_path / "big.pth").image_encoder.img_size == 1024


def test_loader_rejects_non_sam_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pth: not a readable SAM checkpoint"):
        load_sam(tmp_path / "junk.pth")
    torch.save({"w": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other.pth: not a SAM checkpoint"):
        load_sam(tmp_path / "other.pth")


def test_automatic_masks_become_a_valid_label_map(tiny_sam):
    path, _ = tiny_sam
    part = SamPartitioner(path, **LOOSE)
    captured = []
    generate = part.generator.generate
    part.generator.generate = lambda image: captured.append(generate(image)) or captured[-1]
    ct = ct_phantom(128, 1)[0]
    slice01 = (ct + 1024.0) / 4096.0  # the CT task's normalisation
    labels = part(slice01)

    (records,) = captured
    assert part.generator.predictor.original_size == (128, 128)
    n = len(records)
    assert n >= 2, "a loose random SAM should give several masks"
    assert labels.shape == (128, 128) and labels.dtype == np.int32
    assert labels.min() >= 1 and labels.max() <= n + 1
    masks = [r["segmentation"] for r in records]
    np.testing.assert_array_equal(labels, expected_labels(masks))
    assert len(np.unique(labels)) >= 2
    assert part.settings["points_per_side"] == 4 and part.settings["checkpoint"].startswith(
        "tiny_sam.pth:")


@pytest.mark.slow
def test_volume_batches_encoder_and_matches_per_slice(tiny_sam):
    path, _ = tiny_sam
    part = SamPartitioner(path, **LOOSE, batch_size=2)
    vol = (ct_phantom(64, 3) + 1024.0) / 4096.0
    calls = []
    encoder = part.generator.predictor.model.image_encoder
    encoder.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    labels = part.partition_volume(vol)
    assert calls == [2, 1]  # slices 0-1 in one encoder call, slice 2 in another
    assert labels.shape == (3, 64, 64) and labels.dtype == np.int32
    for z in range(3):
        np.testing.assert_array_equal(labels[z], part(vol[z]))
