"""Validation during training: whole-slice forward passes on held-out slices."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ratcli.inference.device import autocast
from ratcli.tasks import TaskSpec
from ratcli.training.metrics import psnr
from ratcli.training.patches import TrainSlice

__all__ = ["validate"]


@torch.no_grad()
def validate(
    model: nn.Module,
    slices: list[TrainSlice],
    *,
    task: TaskSpec,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Mean validation loss and PSNR of `model` over `slices` (normalised units).

    Returns val_loss (mean absolute error, normalised units, the selection criterion),
    val_psnr (dB, with the data range `rat evaluate` uses for the task's primary PSNR:
    the full HU window for CT, 255 for RGB, the target's max - min for PET, so the
    numbers are the same) and, for denoising, val_psnr_input (the noisy input itself).
    """
    was_training = model.training
    model.eval()
    losses, psnrs, inputs = [], [], []
    for s in slices:
        x = torch.from_numpy(s.model_input())[None].to(device)  # (1, C', h, w); 2.5D: C' > C
        r = torch.from_numpy(s.regions)[None].to(device)  # (1, H, W)
        noise = torch.tensor([s.noise], device=device)
        with autocast(device, dtype):
            pred = model(x, r, noise)
        pred = pred.float()[0].cpu().numpy()  # (C, H, W)
        span = _data_range(task, s.target)
        losses.append(float(np.abs(pred - s.target).mean()))
        psnrs.append(psnr(pred, s.target, span))
        if task.scale == 1:
            inputs.append(psnr(s.input, s.target, span))
    model.train(was_training)
    record = {"val_loss": float(np.mean(losses)), "val_psnr": _finite_mean(psnrs)}
    if inputs:
        record["val_psnr_input"] = _finite_mean(inputs)
    return record


def _data_range(task: TaskSpec, target: np.ndarray) -> float:
    """The primary metric's data range, in normalised units."""
    return task.data_range(target, normalised=True)


def _finite_mean(values: list[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")
