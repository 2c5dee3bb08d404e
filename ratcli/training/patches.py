"""Normalised training slices and the random-patch dataset cut from them.

Normalisation and region maps follow the inference path (`ratcli.inference.Restorer`)
exactly, so a model sees the same kind of numbers in training and in use: one set of
normalisation parameters per volume, computed from the *input* (all a user has at
inference time) and applied to input and target alike; region maps from the normalised
input slice (greyscale) or the uint8 slice (RGB), bilinearly upsampled for SR, at
output resolution.

2.5D (`context`, RATConfig.context_slices = k): each slice also carries the k
neighbouring input slices of its volume on each side, chosen by the inference rule
(`ratcli.inference.context.neighbour_index`: replicated at the volume's ends and across
large gaps). A patch cuts all of them at the same (y, x) with the same rot90/flip and
stacks them as channels; target and region map are the centre slice's.

Patches are reproducible: item i of epoch e draws its slice, crop and rot90/flip from
`numpy.random.default_rng([seed, e, i])`, so a resumed run sees the very same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ratcli.errors import GeometryMismatchError, UsageError
from ratcli.inference.context import check_context, neighbour_index, slice_positions
from ratcli.inference.noise import NOISE_SOURCES, estimate_noise, pair_noise
from ratcli.regions.base import Partitioner
from ratcli.tasks import TaskSpec
from ratcli.training.data import VolumePair

__all__ = ["TrainSlice", "prepare_slices", "region_map", "PatchDataset"]


@dataclass(frozen=True)
class TrainSlice:
    """One normalised 2D slice pair.

    input: (C, h, w) float32; target: (C, h*s, w*s) float32; regions: (h*s, w*s) int64
    labels (all 0 when no partitioner: one region); name: "<volume>[z]".
    stack: 2.5D only: the 2k+1 input slices z-k .. z+k, each (C, h, w) (`input` in the
    middle; arrays shared with the neighbouring TrainSlices, not copies); () for 2D.
    noise: the input slice's noise level (normalised units; 0 for RGB): as inference
    estimates it from the input (noise_source "blind", ratcli.inference.noise) or the std
    of the noise added to the target ("pair").
    """

    input: np.ndarray
    target: np.ndarray
    regions: np.ndarray
    name: str
    stack: tuple[np.ndarray, ...] = ()
    noise: float = 0.0

    def model_input(self, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """The network's input cropped to rows ys, columns xs: ((2k+1) * C, h', w')
        float32, slice z-k first; the input itself (a view) for 2D."""
        if not self.stack:
            return self.input[:, ys, xs]
        return np.concatenate([a[:, ys, xs] for a in self.stack])


def prepare_slices(
    pairs: list[VolumePair], task: TaskSpec, *, partitioner: Partitioner | None,
    context: int = 0, noise_source: str = "blind",
) -> list[TrainSlice]:
    """Normalise each volume pair by its input's parameters and cut it into slices;
    context k > 0 gives each slice its 2.5D stack of 2k+1 input slices; noise_source
    ("blind" | "pair") says how TrainSlice.noise is measured."""
    if noise_source not in NOISE_SOURCES:
        raise UsageError(f"noise_source {noise_source!r}: choose blind or pair")
    check_context(task, context)
    out = []
    for pair in pairs:
        params = task.norm_params(pair.input.array)
        inp = task.normalize(pair.input.array, params)  # (Z, h, w[, 3])
        tgt = task.normalize(pair.target.array, params)
        planes = [_chw(a) for a in inp]  # Z x (C, h, w), shared by the stacks
        index = neighbour_index(slice_positions(pair.input), context) if context else None
        for z in range(inp.shape[0]):
            regions = region_map(inp[z], pair.input.array[z], scale=task.scale,
                                 partitioner=partitioner)
            stack = () if index is None else tuple(planes[i] for i in index[z])
            noise = 0.0
            if task.channels == 1:
                noise = (pair_noise(inp[z], tgt[z]) if noise_source == "pair" else
                         estimate_noise(inp[z]))
            out.append(TrainSlice(planes[z], _chw(tgt[z]), regions, f"{pair.name}[{z}]",
                                  stack, noise))
    return out


def region_map(
    norm2d: np.ndarray, raw2d: np.ndarray, *, scale: int, partitioner: Partitioner | None
) -> np.ndarray:
    """(h*s, w*s) int64 labels of one input slice, at output resolution.

    norm2d: (h, w) or (h, w, 3) float32 normalised; raw2d: the same slice before
    normalisation (uint8 for RGB). The partitioner sees the normalised greyscale slice
    or the uint8 RGB slice, bilinearly upsampled by `scale` first (as at inference).
    """
    h, w = norm2d.shape[:2]
    if partitioner is None:
        return np.zeros((h * scale, w * scale), dtype=np.int64)
    rgb = raw2d.dtype == np.uint8
    view = torch.from_numpy(np.ascontiguousarray(raw2d if rgb else norm2d)).float()
    view = view.permute(2, 0, 1) if rgb else view[None]  # (C, h, w)
    if scale > 1:
        view = F.interpolate(view[None], scale_factor=scale, mode="bilinear",
                             align_corners=False)[0]
    if rgb:
        arr = view.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    else:
        arr = view[0].numpy()
    labels = np.asarray(partitioner(arr))
    if labels.shape != (h * scale, w * scale):
        raise GeometryMismatchError(f"region map is {labels.shape}, expected "
                                    f"{(h * scale, w * scale)}")
    return labels.astype(np.int64)


class PatchDataset(Dataset):
    """Random patches from training slices, with random rot90 and flip.

    slices: the training slices. patch: target patch edge (pixels at output resolution,
    a multiple of `scale`); the input patch is patch / scale and sits on the same grid.
    length: items per epoch (default: one per slice, at least 256). augment: rot90/flip.
    Items are (input (C', p/s, p/s), target (C, p, p), regions (p, p) int64, noise ()
    float32: the whole slice's level) tensors; C' = (2k+1) * C for 2.5D slices
    (`TrainSlice.stack`), else C.
    """

    def __init__(
        self,
        slices: list[TrainSlice],
        *,
        patch: int,
        scale: int = 1,
        augment: bool = True,
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        if not slices:
            raise UsageError("no training slices")
        if patch < 16 or patch % scale:
            raise UsageError(f"--patch {patch}: must be >= 16 and a multiple of the scale {scale}")
        for s in slices:
            H, W = s.target.shape[1:]
            if min(H, W) < patch:
                raise UsageError(f"{s.name}: image {H}x{W} is smaller than --patch {patch}; "
                                 "use a smaller patch")
        self.slices = slices
        self.patch, self.scale, self.augment, self.seed = patch, scale, augment, seed
        self.length = length or max(len(slices), 256)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of patches (call before each epoch, like DistributedSampler)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        s = self.slices[int(rng.integers(len(self.slices)))]
        p, k = self.patch, self.scale
        q = p // k  # input patch edge
        h, w = s.input.shape[1:]
        y, x = int(rng.integers(h - q + 1)), int(rng.integers(w - q + 1))
        inp = s.model_input(slice(y, y + q), slice(x, x + q))  # every slice, same (y, x)
        tgt = s.target[:, y * k : y * k + p, x * k : x * k + p]
        reg = s.regions[y * k : y * k + p, x * k : x * k + p]
        if self.augment:
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            inp, tgt, reg = (_augment(a, turns, flip) for a in (inp, tgt, reg))
        return (torch.from_numpy(np.ascontiguousarray(inp)),
                torch.from_numpy(np.ascontiguousarray(tgt)),
                torch.from_numpy(np.ascontiguousarray(reg)),
                torch.tensor(s.noise, dtype=torch.float32))


def _chw(a: np.ndarray) -> np.ndarray:
    """(H, W) -> (1, H, W); (H, W, 3) -> (3, H, W); float32."""
    a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    return np.ascontiguousarray(a, dtype=np.float32)


def _augment(a: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """rot90 `turns` times and optional left-right flip over the last two axes."""
    a = np.rot90(a, turns, axes=(-2, -1))
    return a[..., ::-1] if flip else a
