"""Whole-image restoration with a RAT-like model: normalise, tile, blend, invert.

`Restorer` is set up once (model, task, tiling, device) and has one public method,
`restore(image) -> Image`. Volumes get one normalisation per volume; each slice is
reflect-padded to the model's multiple and cut into overlapping tiles (see tiling.py).
Slices are restored a few at a time ("waves"): the tiles of all slices of a wave go
through the model in batches (`batch_size`, or on CPU as many as fit in
`CPU_BATCH_PIXELS`) regardless of which slice they come from, so a series of small slices
shares forward passes. A wave holds at most
`MAX_WAVE_SLICES` slices and `MAX_WAVE_BYTES` of output accumulators, so memory does not
grow with the volume. The tiles are then blended and cropped back per slice, and the
task's output guard (guards.py) checks the whole restored volume against the input.
Padding outside the field of view (ratcli.io.padding) reaches neither the network nor the
partitioner: they see the task's fill (CT: air) there, and the output keeps the input's
padding pixels exactly. A 2.5D model (`context_slices` k > 0) gets each slice with its k
neighbours on each side, chosen by ratcli.inference.context from the slice positions
(replicated at the ends, for a single slice and across large gaps); the region map is
the centre slice's. A noise-aware model (`noise_ref` > 0) also gets each slice's noise
level, estimated from the whole normalised slice (ratcli.inference.noise), so every tile of
a slice sees the same number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ratcli.errors import DeviceError, GeometryMismatchError, InputFormatError
from ratcli.inference.context import check_context, neighbour_index, slice_positions
from ratcli.inference.device import (
    Precision,
    autocast,
    autocast_dtype,
    free_memory,
    is_out_of_memory,
    resolve_device,
)
from ratcli.inference.guards import apply_guard
from ratcli.inference.noise import estimate_noise
from ratcli.inference.tiling import TileGrid
from ratcli.io.image import Image
from ratcli.io.padding import find_padding
from ratcli.models.rat import pad_to_multiple
from ratcli.options import check_tiling
from ratcli.regions.base import Partitioner
from ratcli.tasks import TaskSpec

__all__ = ["Restorer", "Partitioner", "ProgressFn"]

ProgressFn = Callable[[int, int], None]  # (tiles done, tiles total) for the current image
_Slice = tuple[torch.Tensor, torch.Tensor | None, float]  # x, regions, noise level

MAX_WAVE_SLICES = 16  # slices restored together (their tiles share forward passes)
MAX_WAVE_BYTES = 1 << 28  # float32 output accumulators of one wave on the device
# Automatic batch on CPU: output pixels per forward pass. Past ~256^2 pixels a batch only
# spills the caches (2-core EPYC, width 16, benchmarks/throughput.py: one 512^2 tile per
# pass is 1.3-1.4x faster than four); small PET slices still gain from sharing a pass.
CPU_BATCH_PIXELS = 1 << 16
MAX_AUTO_BATCH = 8
GPU_AUTO_BATCH = 4


class Restorer:
    """Restore `Image`s with one model for one task.

    model: forward(x (B, C, h, w), regions (B, h*s, w*s) int64 | None) -> (B, C', h*s, w*s),
        with attributes `scale` (s), `in_channels`, `out_channels` and optionally
        `context_slices` (k: C = (2k+1) * in_channels, 2.5D); eval mode.
    task: the TaskSpec whose normalisation and inverse are applied (per volume).
    tile: tile edge in input pixels (rounded up to the model's multiple of 16);
        None = task.tile.
    overlap: fraction of the tile shared with each neighbour, in [0, 0.5]; None =
        task.overlap.
    batch_size: tiles per forward pass (tiles of several slices share one when slices are
        small); None = automatic: on CPU as many tiles as fit in CPU_BATCH_PIXELS output
        pixels (at least 1, at most MAX_AUTO_BATCH), elsewhere GPU_AUTO_BATCH.
    device: "auto" | "cpu" | "cuda" | "mps" or a torch.device.
    precision: "auto" (bf16/fp16 autocast on GPU, fp32 on CPU), "fp32", "fp16", "bf16".
    partitioner: region map for a whole slice at output resolution (None: one region
        per tile). For SR it sees the bilinearly upsampled input.
    guard: apply the task's output guard (`guards.apply_guard`, e.g. PET hot spots put
        back, SR clamped to the input's local range); False gives the raw network output.
    min_tile: smallest tile tried after repeated out-of-memory errors.
    on_progress: called after every batch with (tiles done, tiles total).
    """

    def __init__(
        self,
        model: nn.Module,
        task: TaskSpec,
        *,
        tile: int | None = None,
        overlap: float | None = None,
        batch_size: int | None = None,
        device: str | torch.device = "auto",
        precision: str | Precision = Precision.AUTO,
        partitioner: Partitioner | None = None,
        guard: bool = True,
        min_tile: int = 32,
        on_progress: ProgressFn | None = None,
    ) -> None:
        check_tiling(tile, overlap, batch_size)
        self.scale = int(getattr(model, "scale", 1))
        self.multiple = int(getattr(model, "multiple", 16))
        if self.scale != task.scale:
            raise ValueError(f"model scale {self.scale} does not match task {task.name}")
        if getattr(model, "in_channels", task.channels) != task.channels:
            raise ValueError(f"model input channels do not match task {task.name}")
        self.context = int(getattr(model, "context_slices", 0))  # k slices on each side
        self.noise_aware = bool(getattr(model, "noise_ref", 0.0))
        check_context(task, self.context)
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        self.task = task
        self.tile = self._round_tile(tile or task.tile)
        self.min_tile = self._round_tile(min_tile)
        self.overlap = task.overlap if overlap is None else overlap
        self.batch_size = batch_size  # None: _batch() chooses per tile size
        self._last_batch = GPU_AUTO_BATCH
        self.dtype = autocast_dtype(self.device, precision)
        self.partitioner = partitioner
        self.guard = guard
        self.on_progress = on_progress

    @torch.inference_mode()
    def restore(self, image: Image, noise: float | Sequence[float] | None = None) -> Image:
        """Restore every slice of `image`.

        noise: for a noise-aware model, the noise std in the image's units (HU, activity),
        one for all slices or one per slice; None estimates each slice's from the slice
        (ratcli.inference.noise). Other models ignore it.

        Returns a derived Image: same domain and dtype, in-plane size and spacing changed
        by the task's scale, pixels denormalised to the input's units (HU, activity,
        uint8 RGB); padding pixels (ratcli.io.padding) are the input's own.
        """
        self._check(image)
        padding = find_padding(image, self.task)
        # the network's view: the task's fill (CT: air) at the padding pixels
        view = image.array if padding is None else padding.filled(image.array)
        params = self.task.norm_params(view)
        norm = self.task.normalize(view, params)  # (Z, Y, X[, 3]) float32
        del view  # one volume less held while the model runs; rebuilt for the guard
        Z = image.num_slices
        told = None if noise is None else _per_slice(noise, Z) / params.scale  # normalised
        # (Z, 2k+1) slices stacked for each slice; (Z, 1) = the slice itself for a 2D model
        stacks = neighbour_index(slice_positions(image), self.context)
        self._done = 0
        slices: list[np.ndarray] = []
        inputs: dict[int, _Slice] = {}
        while len(slices) < Z:
            z0 = len(slices)
            zs = range(z0, min(Z, z0 + self._wave_size(norm.shape[1], norm.shape[2])))
            for z in zs:  # kept across an out-of-memory retry: the partitioner runs once
                if z not in inputs:
                    inputs[z] = self._prepare(norm, stacks[z], image.array[z], image,
                                              None if told is None else float(told[z]))
            self._slices_left = Z - z0
            done_before = self._done
            try:
                out = self._tiled([inputs[z] for z in zs])  # (k, C', H*s, W*s)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                free_memory(self.device)
                self._shrink(image, exc)
                self._done = done_before  # the wave starts over with smaller batches/tiles
                continue
            for z in zs:
                del inputs[z]
            out = out.permute(0, 2, 3, 1) if norm.ndim == 4 else out[:, 0]
            slices.extend(out.numpy())
        out = self.task.denormalize(np.stack(slices), params)
        if self.guard and self.task.guard:
            low = image.array if padding is None else padding.filled(image.array)
            out = apply_guard(self.task.guard, low, out, self.scale)
        if padding is not None:
            out = padding.put_back(out, image.array)
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

    def _wave_size(self, H: int, W: int) -> int:
        """Slices per wave: the fewest whose tile count fills whole batches, within the
        slice and byte caps."""
        m, s = self.multiple, self.scale
        Hp, Wp = -(-H // m) * m, -(-W // m) * m
        grid = TileGrid.plan(Hp, Wp, tile=self.tile, overlap=round(self.tile * self.overlap))
        batch = self._batch(grid)
        k = batch // math.gcd(len(grid), batch)
        per_slice = 4 * self.model.out_channels * Hp * Wp * s * s
        return max(1, min(k, MAX_WAVE_SLICES, MAX_WAVE_BYTES // per_slice))

    def _prepare(self, norm: np.ndarray, stack: np.ndarray, raw2d: np.ndarray, image: Image,
                 told: float | None) -> _Slice:
        """norm: (Z, H, W) or (Z, H, W, 3) float32 normalised volume; stack: (2k+1,) slice
        indices, the restored slice in the middle; told: its noise level given to
        restore() (normalised), None to estimate it -> (x ((2k+1) * C, H, W), regions of
        the middle slice, its noise level for a noise-aware model (else 0))."""
        planes = [_chw(norm[i]) for i in stack]  # 2k+1 x (C, H, W)
        centre = planes[len(planes) // 2]
        x = centre if len(planes) == 1 else torch.cat(planes)
        noise = 0.0
        if self.noise_aware:
            noise = estimate_noise(norm[stack[len(stack) // 2]]) if told is None else told
        return x, self._regions(centre, raw2d, image), noise

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

    def _tiled(self, items: list[_Slice]) -> torch.Tensor:
        """k slices (x (C, H, W), regions, noise) -> (k, C', H*s, W*s) float32 on CPU; the
        tiles of all k slices are batched together."""
        C, H, W = items[0][0].shape
        s, m = self.scale, self.multiple
        xps = [pad_to_multiple(x, m) for x, _, _ in items]  # (C, Hp, Wp); multiples of m
        rps = [None if r is None else pad_to_multiple(r, m * s) for _, r, _ in items]
        noises = [n for _, _, n in items]
        Hp, Wp = xps[0].shape[-2:]
        grid = TileGrid.plan(Hp, Wp, tile=self.tile, overlap=round(self.tile * self.overlap),
                             scale=s)
        total = self._done + len(grid) * self._slices_left  # re-planned after an OOM shrink
        wy, wx = (
            [torch.from_numpy(w).to(self.device) for w in ws] for ws in grid.weights()
        )
        cells = [(n, i, j) for n in range(len(items))
                 for i in range(len(grid.ys)) for j in range(len(grid.xs))]
        out = torch.zeros(len(items), self.model.out_channels, Hp * s, Wp * s,
                          device=self.device)
        th, tw = grid.tile_h, grid.tile_w
        per_pass = self._last_batch = self._batch(grid)
        for b0 in range(0, len(cells), per_pass):
            batch = cells[b0 : b0 + per_pass]
            origins = [(n, grid.ys[i], grid.xs[j]) for n, i, j in batch]
            pred = self._run_batch(xps, rps, noises, origins, th, tw)  # (B, C', th*s, tw*s)
            for (n, i, j), (_, y, x0), p in zip(batch, origins, pred, strict=True):
                w = wy[i][:, None] * wx[j][None, :]
                out[n, :, y * s : (y + th) * s, x0 * s : (x0 + tw) * s] += p * w
            self._done += len(batch)
            if self.on_progress is not None:
                self.on_progress(self._done, total)
        return out[:, :, : H * s, : W * s].cpu()

    def _run_batch(self, xps: list[torch.Tensor], rps: list[torch.Tensor | None],
                   noises: list[float], origins: list[tuple[int, int, int]], th: int, tw: int
                   ) -> torch.Tensor:
        """One forward over a batch of tiles (slice n, y, x) cut from the padded slices."""
        s = self.scale
        tiles = torch.stack([xps[n][:, y : y + th, x : x + tw] for n, y, x in origins])
        regions = None
        if rps[0] is not None:
            regions = torch.stack([rps[n][y * s : (y + th) * s, x * s : (x + tw) * s]
                                   for n, y, x in origins]).to(self.device)
        args: tuple = (tiles.to(self.device), regions)
        if self.noise_aware:  # every tile of a slice gets the whole slice's level
            args += (torch.tensor([noises[n] for n, _, _ in origins], device=self.device),)
        with autocast(self.device, self.dtype):
            pred = self.model(*args)
        return pred.float()

    def _batch(self, grid: TileGrid) -> int:
        """Tiles per forward pass for tiles of this grid."""
        if self.batch_size is not None:
            return self.batch_size
        if self.device.type != "cpu":
            return GPU_AUTO_BATCH
        pixels = grid.tile_h * grid.tile_w * self.scale**2
        return max(1, min(MAX_AUTO_BATCH, CPU_BATCH_PIXELS // pixels))

    def _shrink(self, image: Image, exc: BaseException) -> None:
        """After an out-of-memory error: halve the batch, then the tile, then give up."""
        if self.batch_size is None:  # explicit from now on, from the batch that failed
            self.batch_size = self._last_batch
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


def _per_slice(noise: float | Sequence[float], Z: int) -> np.ndarray:
    """A noise std given for all Z slices or for each -> (Z,) float64, checked."""
    values = np.asarray(noise, np.float64)
    values = np.full(Z, float(values)) if values.ndim == 0 else values
    if values.shape != (Z,) or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"noise must be one finite value >= 0 or one per slice ({Z}), "
                         f"got {noise!r}")
    return values


def _chw(norm2d: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, 3) float32 -> (C, H, W) tensor sharing memory where it can."""
    x = torch.from_numpy(np.ascontiguousarray(norm2d))
    return x.permute(2, 0, 1) if x.ndim == 3 else x[None]  # (C, H, W)
