"""Task presets as data: modality, channels, scale, normalisation, default weights.

`TASKS` is the table every `--task` choice comes from. A task owns its rules: how its
images are normalised and inverted (`norm_params`, `normalize`, `denormalize`, with the
output rule, e.g. PET never negative), the data range its metrics use (`data_range`),
which DICOM modality it restores (`modality`), and how `--task auto` recognises its
images from their values (`task_from_values`). A new task is one row of `TASKS` plus,
for training, a degradation simulator (training/degrade.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from ratcli.errors import TaskMismatchError, UsageError

if TYPE_CHECKING:
    import numpy as np

# numpy is imported inside the methods: the CLI reads TASKS at start-up without it.

__all__ = ["TaskSpec", "TASKS", "Modality", "Norm", "NormParams", "get_task",
           "task_for_modality", "task_from_values"]


class Modality(StrEnum):
    """DICOM Modality (0008,0060) of the images a task restores."""

    CT = "CT"
    PT = "PT"
    SM = "SM"  # slide microscopy (pathology)


class Norm(StrEnum):
    """How intensities map to the model's range (see TaskSpec.norm_params)."""

    HU = "hu"  # fixed HU window -> [0, 1]
    ROBUST = "robust"  # per-volume percentile of the positive values -> 1
    UINT8 = "uint8"  # 0..255 -> [0, 1]


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
    norm: Norm; modality: Modality of its images; window: (lo, hi) input range mapped
    to [0, 1] for Norm.HU; percentile: top percentile for Norm.ROBUST; tile, overlap:
    default tile edge (input pixels) and the fraction of it shared with neighbours;
    nonnegative: outputs clamped at 0 in the input's units (activity).
    padding_below: values below this are padding outside the field of view when they
    fill a border region (ratcli.io.padding; CT: -1024 HU), None: only by DICOM tags;
    padding_fill: what the network sees at padding pixels (CT: air, -1000 HU).
    """

    name: str
    kind: str
    channels: int
    scale: int
    weights: str
    norm: Norm
    modality: Modality | str
    window: tuple[float, float] = (0.0, 1.0)
    percentile: float = 99.9
    tile: int = 512
    overlap: float = 0.25
    nonnegative: bool = False
    guard: str = ""
    padding_below: float | None = None
    padding_fill: float = 0.0

    def __post_init__(self) -> None:
        # Strings are accepted (tests, configs) and checked here, so a typo fails at once.
        object.__setattr__(self, "norm", Norm(self.norm))

    def norm_params(self, array: np.ndarray) -> NormParams:
        """Normalisation for this image or volume (all slices share it)."""
        import numpy as np

        if self.norm is Norm.HU:
            lo, hi = self.window
            return NormParams(lo, hi - lo)
        if self.norm is Norm.UINT8:
            return NormParams(0.0, 255.0)
        finite = array[np.isfinite(array)]
        pos = finite[finite > 0]
        top = float(np.percentile(pos, self.percentile)) if pos.size else 0.0
        return NormParams(0.0, top if top > 0 else 1.0)

    def normalize(self, array: np.ndarray, p: NormParams) -> np.ndarray:
        import numpy as np

        return ((array.astype(np.float32) - p.offset) / p.scale).astype(np.float32)

    def denormalize(self, array: np.ndarray, p: NormParams) -> np.ndarray:
        """Model output back to the input's units, with the task's output rule applied:
        uint8 rounded and clipped to 0..255; `nonnegative` tasks clamped at 0."""
        import numpy as np

        out = array.astype(np.float32) * p.scale + p.offset
        if self.norm is Norm.UINT8:
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        if self.nonnegative:
            out = np.maximum(out, 0.0)
        return out.astype(np.float32)

    def check_weights(self, ckpt) -> None:
        """Raise TaskMismatchError unless checkpoint `ckpt` (a models.Checkpoint: path,
        config, meta) can run this task: same channels and scale, and trained for it
        when its meta names a task."""
        cfg, trained_for = ckpt.config, ckpt.meta.get("task")
        if trained_for and trained_for != self.name:
            raise TaskMismatchError(f"{ckpt.path}: weights were trained for task "
                                    f"{trained_for}, not {self.name}")
        if cfg.in_channels != self.channels or cfg.out_channels != self.channels:
            raise TaskMismatchError(f"{ckpt.path}: model has {cfg.in_channels} input "
                                    f"channels; task {self.name} needs {self.channels}")
        if cfg.scale != self.scale:
            raise TaskMismatchError(f"{ckpt.path}: model upsamples x{cfg.scale}; task "
                                    f"{self.name} needs x{self.scale}")

    def data_range(self, target: np.ndarray, *, normalised: bool = False) -> float:
        """The data range metrics use (PSNR, SSIM): the HU window for Norm.HU, 255 for
        Norm.UINT8 (1.0 for both when `normalised`, as normalisation maps exactly those
        ranges onto 0..1), else the target's own span (1.0 when flat)."""
        import numpy as np

        if self.norm is Norm.HU:
            return 1.0 if normalised else self.window[1] - self.window[0]
        if self.norm is Norm.UINT8:
            return 1.0 if normalised else 255.0
        span = float(np.max(target) - np.min(target))
        return span if span > 0 else 1.0


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        # HU window covers air (-1024) to dense bone/contrast; outside values still pass
        # through linearly (no clipping), the window only sets the model's scale.
        # Below -1024 HU is not attenuation: a border region of one such value is the
        # scanner's padding outside the field of view; the network sees air there.
        TaskSpec("ct", "denoise", 1, 1, "rat-ct", Norm.HU, Modality.CT,
                 window=(-1024.0, 3072.0), padding_below=-1024.0, padding_fill=-1000.0),
        # Activity concentration cannot be negative: the output rule clamps at 0; the
        # activity guard puts back hot (and cold) spots the network flattened.
        TaskSpec("pet", "denoise", 1, 1, "rat-pet", Norm.ROBUST, Modality.PT,
                 nonnegative=True, guard="activity"),
        # SR: 1024 output pixels per tile edge with the 64 (x2) / 32 (x4) input pixels
        # of overlap that 512-px tiles had; the channel attention pools 512 output pixels
        # (RATConfig.sca_window) whatever the tile.
        TaskSpec("sr-x2", "sr", 3, 2, "rat-sr-x2", Norm.UINT8, Modality.SM, tile=512,
                 overlap=0.125, guard="range"),
        TaskSpec("sr-x4", "sr", 3, 4, "rat-sr-x4", Norm.UINT8, Modality.SM, tile=256,
                 overlap=0.125, guard="range"),
    )
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise UsageError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def task_for_modality(modality: str | None, kind: str = "denoise") -> TaskSpec | None:
    """The task of `kind` whose images have this DICOM Modality (CT -> ct, PT -> pet),
    or None."""
    for task in TASKS.values():
        if task.kind == kind and task.modality == modality:
            return task
    return None


# `--task auto` on files without a modality (NIfTI, PNG/TIFF): what the values must show.
_AIR_HU = (-1100.0, -900.0)  # air, outside the body, in HU
_TISSUE_HU = (-200.0, 200.0)  # water and soft tissue
_MIN_FRACTION = 0.01  # of finite voxels, for both air and tissue


def task_from_values(array: np.ndarray, *, kind: str = "denoise") -> tuple[TaskSpec | None, str]:
    """Recognise a denoising task from an image's values, for inputs without a modality.

    array: (Z, Y, X) float (units as stored) or (Z, Y, X, 3) uint8 RGB.
    Returns (task, why): ct when the values are HU (at least 1% air near -1000 and 1%
    soft tissue near 0); pet when they are non-negative, not all integers, and not all
    zero (activity); otherwise (None, why not). RGB is never a denoising task.
    """
    import numpy as np

    if kind != "denoise":
        return None, "only denoising tasks are recognised from values"
    if array.ndim == 4:
        return None, "RGB images are super-resolved (rat sr), not denoised"
    a = array[np.isfinite(array)]
    if a.size == 0:
        return None, "no finite values"
    air = np.count_nonzero((a >= _AIR_HU[0]) & (a <= _AIR_HU[1])) / a.size
    tissue = np.count_nonzero((a >= _TISSUE_HU[0]) & (a <= _TISSUE_HU[1])) / a.size
    if air >= _MIN_FRACTION and tissue >= _MIN_FRACTION:
        return TASKS["ct"], (f"values look like CT in HU ({air:.0%} air near -1000, "
                             f"{tissue:.0%} soft tissue near 0)")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0 and hi > 0 and not np.all(a == np.rint(a)):
        return TASKS["pet"], f"values look like PET activity (non-negative, 0..{hi:.4g})"
    return None, f"values {lo:.4g}..{hi:.4g} are neither CT (HU) nor PET activity"
