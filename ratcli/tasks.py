"""Task presets as data: channels, scale, intensity normalisation, default weights.

`TASKS` is the table every `--task` choice comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ratcli.errors import UsageError

__all__ = ["TaskSpec", "TASKS", "get_task", "NormParams"]


@dataclass(frozen=True)
class NormParams:
    """x_norm = (x - offset) / scale; stored per image/volume so it can be inverted."""

    offset: float
    scale: float


@dataclass(frozen=True)
class TaskSpec:
    """One restoration task.

    name: registry key (`--task`); kind: "denoise" or "sr"; channels: model in/out
    channels; scale: SR factor (1 for denoising); weights: default manifest name;
    norm: "hu" (fixed HU window), "robust" (per-volume percentile) or "uint8";
    window: (lo, hi) input range mapped to [0, 1] for "hu"; tile: default tile edge.
    """

    name: str
    kind: str
    channels: int
    scale: int
    weights: str
    norm: str
    modality: str
    window: tuple[float, float] = (0.0, 1.0)
    percentile: float = 99.9
    tile: int = 256

    def norm_params(self, array: np.ndarray) -> NormParams:
        """Normalisation for this image or volume (all slices share it)."""
        if self.norm == "hu":
            lo, hi = self.window
            return NormParams(lo, hi - lo)
        if self.norm == "uint8":
            return NormParams(0.0, 255.0)
        if self.norm == "robust":
            finite = array[np.isfinite(array)]
            pos = finite[finite > 0]
            top = float(np.percentile(pos, self.percentile)) if pos.size else 0.0
            return NormParams(0.0, top if top > 0 else 1.0)
        raise ValueError(f"unknown normalisation {self.norm!r}")

    def normalize(self, array: np.ndarray, p: NormParams) -> np.ndarray:
        return ((array.astype(np.float32) - p.offset) / p.scale).astype(np.float32)

    def denormalize(self, array: np.ndarray, p: NormParams) -> np.ndarray:
        out = array.astype(np.float32) * p.scale + p.offset
        if self.norm == "uint8":
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return out.astype(np.float32)


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        # HU window covers air (-1024) to dense bone/contrast; outside values still pass
        # through linearly (no clipping), the window only sets the model's scale.
        TaskSpec("ct", "denoise", 1, 1, "rat-ct", "hu", "CT", window=(-1024.0, 3072.0)),
        TaskSpec("pet", "denoise", 1, 1, "rat-pet", "robust", "PT"),
        TaskSpec("sr-x2", "sr", 3, 2, "rat-sr-x2", "uint8", "SM", tile=256),
        TaskSpec("sr-x4", "sr", 3, 4, "rat-sr-x4", "uint8", "SM", tile=128),
    )
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise UsageError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None
