"""Training settings: one frozen dataclass, readable from a TOML or JSON file.

`rat train --config FILE` reads a file whose keys are the field names below (TOML
top-level keys or a JSON object); options given on the command line override it.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ratcli.errors import InputFormatError, UsageError
from ratcli.inference.context import check_context
from ratcli.inference.noise import NOISE_SOURCES
from ratcli.models import RATConfig, RegionAttentionTransformer
from ratcli.tasks import TaskSpec, get_task
from ratcli.training.degrade import Degradation, make_degradation

__all__ = ["TrainConfig", "load_config_file", "resolve_task_name", "RECIPE_DEFAULTS"]

_RECIPE = {"width": 16, "lr": 1e-3, "betas": (0.9, 0.999), "focal_beta": 1.0,
           "regions": "classical"}
# What the shipped weights were trained with (weights/recipes/<task>.toml, less data,
# validation and device): `rat train --task T` starts from these, a config file and
# options override them. CT needs the model-side input affine and detail channel.
RECIPE_DEFAULTS: dict[str, dict] = {
    "ct": {**_RECIPE, "input_shift": 0.25, "input_gain": 4.0, "input_detail": 40.0,
           "iters": 5000, "batch_size": 8, "patch": 64, "dose": 0.25, "photons": 1e6,
           "val_every": 250},
    "pet": {**_RECIPE, "iters": 4000, "batch_size": 8, "patch": 64, "val_every": 250},
    "sr-x2": {**_RECIPE, "iters": 500, "batch_size": 4, "patch": 96, "val_every": 100},
    "sr-x4": {**_RECIPE, "iters": 500, "batch_size": 4, "patch": 96, "val_every": 100},
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved in the run and its checkpoints).

    task: ct | pet | sr-x2 | sr-x4 (or sr with `scale`). data / val: data specs (see
    data.py); val None = hold out the last 10 % of the training volumes. width, heads,
    region_attn: model size; region_attn False = window attention only (the ablation).
    sca_window: RATConfig.sca_window in output pixels; training patches no larger pool
    whole, as NAFNet, so it only sets what larger inference tiles compute.
    context_slices: RATConfig.context_slices, k neighbouring slices on each side as extra
    input channels (2.5D, CT/PET only; ratcli.inference.context); 0 = the 2D model.
    noise_ref: RATConfig.noise_ref, > 0 for a model that also sees each slice's noise
    level (ratcli.inference.noise; greyscale tasks only). noise_source: that level as
    estimated from the input alone ("blind", what inference computes when not told) or
    the std of the noise added to the target ("pair": a model to be told the noise, as
    BM3D is).
    identity_init: zero the output convolution so that, through the global residual, the
    untrained model returns its input (bilinearly upsampled for SR) and training starts from
    the input's quality. iters: optimiser steps; batch_size: patches per step and process;
    patch: target patch edge in pixels. lr, lr_min, betas, weight_decay: Adam and the cosine
    decay from lr to lr_min over `iters`. grad_clip: max global grad norm (0 = off).
    focal_beta: focal region loss beta (0 = plain L1). overshoot_weight: weight of the
    overshoot loss (losses.overshoot_loss, against halos next to edges; 0 = off).
    regions: none | classical | litemedsam | sam | auto. dose, photons, electronic_noise, counts,
    blur_sigma, noise_sigma, jpeg_quality: degradation simulator settings. seed: seeds
    model init, patches and simulation; realizations: simulated inputs per single-quality
    training volume. init: weights (path or manifest name) to start from instead of a fresh
    initialisation (fine-tuning; the model settings must match them).
    val_every / log_every: steps between validations / log lines; val_max: most validation
    slices used. workers: DataLoader processes. amp: mixed precision on CUDA. device: auto |
    cpu | cuda | mps.
    """

    task: str = "ct"
    data: str = "synthetic:ct"
    val: str | None = None
    width: int = 32
    heads: int = 8
    region_attn: bool = True
    identity_init: bool = True
    init: str = ""
    # model-side affine of the normalised input (RATConfig.input_shift / input_gain)
    input_shift: float = 0.0
    input_gain: float = 1.0
    input_detail: float = 0.0  # RATConfig.input_detail: gain of the stem's detail channel
    sca_window: int = 256  # RATConfig.sca_window (output pixels): patches below it pool whole
    context_slices: int = 0  # RATConfig.context_slices: 2.5D input, k slices on each side
    noise_ref: float = 0.0  # RATConfig.noise_ref (normalised units): noise-aware model
    noise_source: str = "blind"  # what the noise channel is trained with: blind | pair
    iters: int = 20000
    batch_size: int = 8
    patch: int = 128
    lr: float = 2e-4
    lr_min: float = 1e-6
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    focal_beta: float = 1.0
    overshoot_weight: float = 0.0
    regions: str = "classical"
    dose: float = 0.25
    photons: float = 1e6
    electronic_noise: float = 0.0
    counts: float = 30.0
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int = 0
    seed: int = 0
    realizations: int = 1
    val_every: int = 500
    log_every: int = 50
    val_max: int = 16
    workers: int = 0
    amp: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", resolve_task_name(self.task))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        checks = [
            (self.iters >= 1, "iters must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.realizations >= 1, "realizations must be >= 1"),
            (self.realizations == 1 or self.val is not None,
             "realizations > 1 needs a separate val set (a split would share volumes)"),
            (self.width >= 1 and (4 * self.width) % self.heads == 0,
             f"4 x width ({4 * self.width}) must be divisible by heads ({self.heads})"),
            (self.lr > 0 and 0 <= self.lr_min <= self.lr, "need lr > 0 and 0 <= lr_min <= lr"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas in [0, 1)"),
            (self.grad_clip >= 0 and self.focal_beta >= 0, "grad_clip, focal_beta must be >= 0"),
            (self.sca_window >= 0 and self.sca_window % 2 == 0,
             "sca_window must be 0 (whole tile) or a positive even number"),
            (self.overshoot_weight >= 0, "overshoot_weight must be >= 0"),
            (self.context_slices >= 0, "context_slices must be >= 0"),
            (self.noise_ref >= 0, "noise_ref must be >= 0"),
            (self.noise_source in NOISE_SOURCES, "noise_source: choose blind or pair"),
            (self.noise_ref == 0 or self.spec.channels == 1,
             "noise_ref (a noise-aware model) is for greyscale CT/PET tasks"),
            (self.val_every >= 1 and self.log_every >= 1 and self.val_max >= 1,
             "val_every, log_every, val_max must be >= 1"),
            (self.regions in ("none", "classical", "litemedsam", "sam", "auto"),
             f"regions {self.regions!r}: choose none, classical, litemedsam, sam or auto"),
        ]
        for ok, why in checks:
            if not ok:
                raise UsageError(f"training config: {why}")
        check_context(self.spec, self.context_slices)

    @property
    def spec(self) -> TaskSpec:
        return get_task(self.task)

    def model_config(self) -> RATConfig:
        spec = self.spec
        # R-MSA never sees a region larger than a training patch, at inference neither
        m = RegionAttentionTransformer.multiple
        block = -(-self.patch // m) * m
        return RATConfig(in_channels=spec.channels, out_channels=spec.channels,
                         width=self.width, num_heads=self.heads, scale=spec.scale,
                         region_attn=self.region_attn, input_shift=self.input_shift,
                         input_gain=self.input_gain, input_detail=self.input_detail,
                         region_block=block if self.region_attn else 0,
                         sca_window=self.sca_window, context_slices=self.context_slices,
                         noise_ref=self.noise_ref)

    def degradation(self) -> Degradation:
        return make_degradation(self.spec, dose=self.dose, photons=self.photons,
                                electronic_noise=self.electronic_noise, counts=self.counts,
                                blur_sigma=self.blur_sigma, noise_sigma=self.noise_sigma,
                                jpeg_quality=self.jpeg_quality)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "config") -> TrainConfig:
        _check_keys(values, source)
        return cls(**values)


def load_config_file(path: str | Path) -> dict:
    """Settings from a .toml or .json file, as a dict of TrainConfig field values."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: config file not found")
    try:
        if path.suffix.lower() == ".toml":
            values = tomllib.loads(path.read_text())
        else:
            values = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'} "
                               f"({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise InputFormatError(f"{path}: expected a table of settings")
    _check_keys(values, str(path))
    return values


def resolve_task_name(task: str, scale: int | None = None) -> str:
    """`sr` + scale -> sr-x2 / sr-x4; other names are checked against the task table."""
    if task == "sr":
        if scale not in (2, 4):
            raise UsageError("--task sr needs --scale 2 or 4")
        task = f"sr-x{scale}"
    spec = get_task(task)
    if scale is not None and spec.scale != scale and not (spec.kind != "sr" and scale == 1):
        raise UsageError(f"--task {task} has scale {spec.scale}, not --scale {scale}")
    return task


def _check_keys(values: dict, source: str) -> None:
    unknown = sorted(set(values) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise UsageError(f"{source}: unknown training setting(s) {', '.join(unknown)}")
