"""Whole-image restoration with a RAT-like model: normalise, tile, blend, invert.

`Restorer` is set up once (model, task, tiling, device) and has one public method,
`restore(image) -> Image`. Volumes are restored slice by slice along Z with one
normalisation per volume; each slice is reflect-padded to the model's multiple, cut into
overlapping tiles (see tiling.py), run in batches, blended and cropped back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ratcli.errors import DeviceError, GeometryMismatchError, InputFormatError
from ratcli.inference.device import (
    Precision,
    autocast,
    autocast_dtype,
    free_memory,
    is_out_of_memory,
    resolve_device,
)
from ratcli.inference.tiling import TileGrid
from ratcli.io.image import Image
from ratcli.models.rat import pad_to_multiple
from ratcli.regions.base import Partitioner
from ratcli.tasks import TaskSpec

__all__ = ["Restorer", "Partitioner", "ProgressFn"]

ProgressFn = Callable[[int, int], None]  # (tiles done, tiles total) for the current image


class Restorer:
    """Restore `Image`s with one model for one task.

    model: forward(x (B, C, h, w), regions (B, h*s, w*s) int64 | None) -> (B, C', h*s, w*s),
        with attributes `scale` (s), `in_channels`, `out_channels`; eval mode.
    task: the TaskSpec whose normalisation and inverse are applied (per volume).
    tile: tile edge in input pixels (rounded up to the model's multiple of 16);
        None = task.tile.
    overlap: fraction of the tile shared with each neighbour, in [0, 0.5].
    batch_size: tiles per forward pass.
    device: "auto" | "cpu" | "cuda" | "mps" or a torch.device.
    precision: "auto" (bf16/fp16 autocast on GPU, fp32 on CPU), "fp32", "fp16", "bf16".
    partitioner: region map for a whole slice at output resolution (None: one region
        per tile). For SR it sees the bilinearly upsampled input.
    min_tile: smallest tile tried after repeated out-of-memory errors.
    on_progress: called after every batch with (tiles done, tiles total).
    """

    def __init__(
        self,
        model: nn.Module,
        task: TaskSpec,
        *,
        tile: int | None = None,
        overlap: float = 0.25,
        batch_size: int = 4,
        device: str | torch.device = "auto",
        precision: str | Precision = Precision.AUTO,
        partitioner: Partitioner | None = None,
        min_tile: int = 32,
        on_progress: ProgressFn | None = None,
    ) -> None:
        if not 0.0 <= overlap <= 0.5:
            raise ValueError(f"overlap must be in [0, 0.5], got {overlap}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.scale = int(getattr(model, "scale", 1))
        self.multiple = int(getattr(model, "multiple", 16))
        if self.scale != task.scale:
            raise ValueError(f"model scale {self.scale} does not match task {task.name}")
        if getattr(model, "in_channels", task.channels) != task.channels:
            raise ValueError(f"model input channels do not match task {task.name}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        self.task = task
        self.tile = self._round_tile(tile or task.tile)
        self.min_tile = self._round_tile(min_tile)
        self.overlap = overlap
        self.batch_size = batch_size
        self.dtype = autocast_dtype(self.device, precision)
        self.partitioner = partitioner
        self.on_progress = on_progress

    @torch.inference_mode()
    def restore(self, image: Image) -> Image:
        """Restore every slice of `image`.

        Returns a derived Image: same domain and dtype, in-plane size and spacing changed
        by the task's scale, pixels denormalised to the input's units (HU, activity,
        uint8 RGB).
        """
        self._check(image)
        params = self.task.norm_params(image.array)
        norm = self.task.normalize(image.array, params)  # (Z, Y, X[, 3]) float32
        self._done = 0
        slices = []
        for z in range(image.num_slices):
            self._slices_left = image.num_slices - z
            slices.append(self._restore_slice(norm[z], image.array[z], image))
        out = self.task.denormalize(np.stack(slices), params)
        return image.derived(out, scale=self.scale)

    # -- private steps, in call order --------------------------------------------------

    def _check(self, image: Image) -> None:
        want_rgb = self.task.channels == 3
        if image.is_rgb != want_rgb:
            have, want = ("RGB", "greyscale") if image.is_rgb else ("greyscale", "RGB")
            raise InputFormatError(f"{image.source}: task {self.task.name} needs {want} "
                                   f"images, this one is {have}")
        if not image.is_rgb:
            bad = int(np.size(image.array) - np.count_nonzero(np.isfinite(image.array)))
            if bad:
                raise InputFormatError(f"{image.source}: {bad} pixels are NaN or infinite")

    def _restore_slice(self, norm2d: np.ndarray, raw2d: np.ndarray, image: Image) -> np.ndarray:
        """norm2d: (H, W) or (H, W, 3) float32 normalised; returns (H*s, W*s[, 3]) float32."""
        x = torch.from_numpy(np.ascontiguousarray(norm2d))
        x = x.permute(2, 0, 1) if x.ndim == 3 else x[None]  # (C, H, W)
        regions = self._regions(x, raw2d, image)
        done_before = self._done
        while True:
            try:
                out = self._tiled(x, regions)  # (C, H*s, W*s)
                break
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                free_memory(self.device)
                self._shrink(image, exc)
                self._done = done_before  # the slice starts over with smaller tiles
        out = out.permute(1, 2, 0) if norm2d.ndim == 3 else out[0]
        return out.numpy()

    def _regions(self, x: torch.Tensor, raw2d: np.ndarray, image: Image) -> torch.Tensor | None:
        """Region labels (H*s, W*s) int64 for the whole slice, or None (one region)."""
        if self.partitioner is None or getattr(self.partitioner, "one_region", False):
            return None  # the model's own default, without partitioning anything
        C, H, W = x.shape
        s = self.scale
        if raw2d.dtype == np.uint8:  # RGB: partition the uint8 image itself
            view = torch.from_numpy(np.ascontiguousarray(raw2d)).permute(2, 0, 1).float()
        else:
            view = x
        if s > 1:  # regions live at output resolution: partition the upsampled input
            view = F.interpolate(view[None], scale_factor=s, mode="bilinear",
                                 align_corners=False)[0]
        if raw2d.dtype == np.uint8:
            arr = view.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        else:
            arr = view[0].numpy()
        labels = np.asarray(self.partitioner(arr))
        if labels.shape != (H * s, W * s):
            raise GeometryMismatchError(f"{image.source}: region map is {labels.shape}, "
                                        f"expected {(H * s, W * s)}")
        return torch.from_numpy(labels.astype(np.int64))

    def _tiled(self, x: torch.Tensor, regions: torch.Tensor | None) -> torch.Tensor:
        """x (C, H, W) -> (C', H*s, W*s) float32 on CPU, tile by tile."""
        C, H, W = x.shape
        s, m = self.scale, self.multiple
        xp = pad_to_multiple(x, m)  # (C, Hp, Wp); Hp, Wp multiples of m
        rp = None if regions is None else pad_to_multiple(regions, m * s)
        Hp, Wp = xp.shape[-2:]
        grid = TileGrid.plan(Hp, Wp, tile=self.tile, overlap=round(self.tile * self.overlap),
                             scale=s)
        total = self._done + len(grid) * self._slices_left  # re-planned after an OOM shrink
        wy, wx = (
            [torch.from_numpy(w).to(self.device) for w in ws] for ws in grid.weights()
        )
        cells = [(i, j) for i in range(len(grid.ys)) for j in range(len(grid.xs))]
        out = torch.zeros(self.model.out_channels, Hp * s, Wp * s, device=self.device)
        th, tw = grid.tile_h, grid.tile_w
        for b0 in range(0, len(cells), self.batch_size):
            batch = cells[b0 : b0 + self.batch_size]
            origins = [(grid.ys[i], grid.xs[j]) for i, j in batch]
            pred = self._run_batch(xp, rp, origins, th, tw)  # (B, C', th*s, tw*s)
            for (i, j), (y, x0), p in zip(batch, origins, pred, strict=True):
                w = wy[i][:, None] * wx[j][None, :]
                out[:, y * s : (y + th) * s, x0 * s : (x0 + tw) * s] += p * w
            self._done += len(batch)
            if self.on_progress is not None:
                self.on_progress(self._done, total)
        return out[:, : H * s, : W * s].cpu()

    def _run_batch(self, xp: torch.Tensor, rp: torch.Tensor | None,
                   origins: list[tuple[int, int]], th: int, tw: int) -> torch.Tensor:
        """One forward over a batch of tiles cut from the padded slice."""
        s = self.scale
        tiles = torch.stack([xp[:, y : y + th, x : x + tw] for y, x in origins])
        regions = None
        if rp is not None:
            regions = torch.stack([rp[y * s : (y + th) * s, x * s : (x + tw) * s]
                                   for y, x in origins]).to(self.device)
        with autocast(self.device, self.dtype):
            pred = self.model(tiles.to(self.device), regions)
        return pred.float()

    def _shrink(self, image: Image, exc: BaseException) -> None:
        """After an out-of-memory error: halve the batch, then the tile, then give up."""
        if self.batch_size > 1:
            self.batch_size //= 2
        elif self.tile > self.min_tile:
            self.tile = max(self.min_tile, self._round_tile(self.tile // 2))
        else:
            raise DeviceError(f"{image.source}: out of memory on {self.device} even with one "
                              f"{self.tile}x{self.tile} tile per batch") from exc

    def _round_tile(self, tile: int) -> int:
        m = self.multiple
        return max(m, -(-int(tile) // m) * m)
