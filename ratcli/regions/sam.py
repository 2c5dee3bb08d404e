"""Segment Anything region maps: automatic masks -> one label map (spec, "Region maps").

This module, the only one that imports `segment_anything`, is imported when a SAM
partitioner is asked for. The model itself is loaded on the first slice, so a run whose
slices all hit the region cache never loads it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from ratcli.errors import CheckpointError
from ratcli.regions.base import Partitioner, to_uint8

__all__ = ["SamPartitioner", "build_sam", "load_sam", "masks_to_labels"]

PATCH = 16  # ViT patch size of every SAM image encoder
WINDOW = 14  # window size of SAM's non-global encoder blocks
PROMPT_DIM = 256


class SamPartitioner(Partitioner):
    """SamAutomaticMaskGenerator over a SAM checkpoint; masks become one label map.

    checkpoint: an official SAM file (vit_b, vit_l, vit_h) or any state dict of the same
        architecture family (the encoder size is read from the weights).
    points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
        box_nms_thresh, crop_n_layers: SamAutomaticMaskGenerator's settings (defaults:
        the paper's = SAM's own).
    device: "cpu", "cuda", ... or "auto" (CUDA when available).
    batch_size: slices whose image embeddings are computed in one encoder call by
        `partition_volume` (the encoder is most of SAM's cost).
    """

    name = "sam"

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        device: str = "auto",
        batch_size: int = 4,
    ) -> None:
        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise CheckpointError(f"{self.checkpoint}: SAM checkpoint not found")
        if points_per_side < 1 or points_per_batch < 1 or batch_size < 1:
            raise ValueError("points_per_side, points_per_batch and batch_size must be >= 1")
        self.generator_kwargs = {
            "points_per_side": int(points_per_side),
            "points_per_batch": int(points_per_batch),
            "pred_iou_thresh": float(pred_iou_thresh),
            "stability_score_thresh": float(stability_score_thresh),
            "box_nms_thresh": float(box_nms_thresh),
            "crop_n_layers": int(crop_n_layers),
        }
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.batch_size = int(batch_size)
        self._generator = None

    @property
    def settings(self) -> dict:
        # The file's name and size stand for its content: hashing a 2.6 GB checkpoint on
        # every run would cost more than most cache hits save.
        ckpt = f"{self.checkpoint.name}:{self.checkpoint.stat().st_size}"
        return {"checkpoint": ckpt, **self.generator_kwargs}

    @property
    def generator(self) -> SamAutomaticMaskGenerator:
        """The SamAutomaticMaskGenerator, built on first use."""
        if self._generator is None:
            model = load_sam(self.checkpoint, device=self.device)
            self._generator = SamAutomaticMaskGenerator(model, **self.generator_kwargs)
            self._generator.predictor = _PresetPredictor(model)
        return self._generator

    def _partition(self, slice2d: np.ndarray) -> np.ndarray:
        rgb = _to_rgb(slice2d)
        return masks_to_labels(self.generator.generate(rgb), rgb.shape[:2])

    def partition_volume(self, volume: np.ndarray) -> np.ndarray:
        """(Z, H, W) float32 or (Z, H, W, 3) uint8 -> (Z, H, W) int32; the encoder runs on
        `batch_size` slices at a time, the mask decoder per slice."""
        generator = self.generator
        predictor: _PresetPredictor = generator.predictor
        out = np.empty(volume.shape[:3], dtype=np.int32)
        for start in range(0, volume.shape[0], self.batch_size):
            rgbs = [_to_rgb(s) for s in volume[start:start + self.batch_size]]
            for offset, preset in enumerate(predictor.embed(rgbs)):
                predictor.preset = preset
                masks = generator.generate(rgbs[offset])
                out[start + offset] = masks_to_labels(masks, rgbs[offset].shape[:2])
            predictor.preset = None
        return out


def masks_to_labels(masks: Sequence[dict | np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Turn SAM masks into one (H, W) int32 label map.

    masks: SamAutomaticMaskGenerator records (with "segmentation" (H, W) bool and "area")
    or plain (H, W) bool arrays. Sorted by area, largest first (ties keep their order);
    mask k of that order is painted with label k (1..n), so smaller masks overwrite
    larger ones; pixels no mask covers get label n + 1.
    """
    segs = [np.asarray(m["segmentation"] if isinstance(m, dict) else m, dtype=bool)
            for m in masks]
    for s in segs:
        if s.shape != tuple(shape):
            raise ValueError(f"mask shape {s.shape} does not match the image {tuple(shape)}")
    areas = [int(s.sum()) for s in segs]
    order = sorted(range(len(segs)), key=lambda k: -areas[k])  # stable: ties keep order
    labels = np.full(shape, len(segs) + 1, dtype=np.int32)
    for label, k in enumerate(order, start=1):
        labels[segs[k]] = label
    return labels


def build_sam(
    *,
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
    image_size: int = 1024,
) -> Sam:
    """A SAM from segment_anything's own modules (defaults: vit_b).

    The prompt encoder and mask decoder are the same for every SAM; only the image
    encoder changes size. `image_size` (multiple of 16) sets the encoder's input edge;
    the official checkpoints use 1024.
    """
    grid = image_size // PATCH
    encoder = ImageEncoderViT(
        img_size=image_size, patch_size=PATCH, embed_dim=embed_dim, depth=depth,
        num_heads=num_heads, mlp_ratio=4, out_chans=PROMPT_DIM, qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
        window_size=WINDOW, global_attn_indexes=tuple(global_attn_indexes),
    )
    prompt = PromptEncoder(embed_dim=PROMPT_DIM, image_embedding_size=(grid, grid),
                           input_image_size=(image_size, image_size), mask_in_chans=16)
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048,
                                      num_heads=8),
        transformer_dim=PROMPT_DIM, iou_head_depth=3, iou_head_hidden_dim=256,
    )
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder,
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def load_sam(path: str | Path, *, device: str = "cpu") -> Sam:
    """Load a SAM checkpoint (a plain state dict, read with weights_only=True).

    The encoder's width, depth, heads, global-attention blocks and input size are read
    from the tensor shapes, so vit_b, vit_l, vit_h and smaller test models all load.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable SAM checkpoint "
                              f"({exc.__class__.__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # some re-saved checkpoints wrap the state dict
    if not isinstance(state, dict) or "image_encoder.pos_embed" not in state:
        raise CheckpointError(f"{path}: not a SAM checkpoint (no image_encoder.pos_embed)")
    model = build_sam(**_encoder_shape(state))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit a SAM model ({first})") from None
    return model.to(device).eval()


def _encoder_shape(state: dict[str, torch.Tensor]) -> dict:
    """build_sam's encoder arguments from a state dict's tensor shapes."""
    _, grid, _, embed_dim = state["image_encoder.pos_embed"].shape  # (1, H/16, W/16, C)
    blocks = sorted({int(m.group(1)) for k in state
                     if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape for i in blocks]
    # rel_pos_h: (2 * span - 1, head_dim); span = the grid for global blocks, else WINDOW
    return {
        "embed_dim": int(embed_dim),
        "depth": len(blocks),
        "num_heads": int(embed_dim) // int(rel[0][1]),
        "global_attn_indexes": tuple(i for i, s in zip(blocks, rel, strict=True)
                                     if s[0] == 2 * grid - 1),
        "image_size": int(grid) * PATCH,
    }


def _to_rgb(slice2d: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 for SAM: greyscale windowed to uint8 and replicated."""
    u8 = to_uint8(slice2d)
    return u8 if u8.ndim == 3 else np.repeat(u8[..., None], 3, axis=-1)


class _PresetPredictor(SamPredictor):
    """SamPredictor that can take image embeddings computed beforehand, in a batch."""

    preset: dict | None = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        p = self.preset
        if p is not None and tuple(image.shape[:2]) == p["original_size"]:
            # the full slice whose embedding `embed` already computed
            self.reset_image()
            self.features = p["features"]
            self.original_size, self.input_size = p["original_size"], p["input_size"]
            self.is_image_set = True
            return
        super().set_image(image, image_format)  # crops (crop_n_layers > 0)

    @torch.no_grad()
    def embed(self, images: list[np.ndarray]) -> list[dict]:
        """Image embeddings of (H, W, 3) uint8 images in one encoder call."""
        batch, sizes = [], []
        for img in images:
            x = torch.as_tensor(self.transform.apply_image(img), device=self.device)
            x = x.permute(2, 0, 1).contiguous()[None]  # (H, W, 3) -> (1, 3, H, W)
            sizes.append((tuple(img.shape[:2]), tuple(x.shape[-2:])))
            batch.append(self.model.preprocess(x))  # normalised, padded to a square
        features = self.model.image_encoder(torch.cat(batch))  # (B, 256, S/16, S/16)
        return [{"features": features[i:i + 1], "original_size": o, "input_size": s}
                for i, (o, s) in enumerate(sizes)]
