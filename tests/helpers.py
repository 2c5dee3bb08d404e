"""Helpers shared by the tests: tiny random-init RAT checkpoints (fast on one CPU core) and a
local SR model for bit-exact chunking checks."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ratcli.models import RATConfig, build_rat, save_checkpoint

# the smallest model with every part (one group, one RAT layer, one NAFBlock per level)
SMALL = dict(width=8, num_groups=1, layers_per_group=1, enc_blocks=1, dec_blocks=1)


def small_checkpoint(path: Path, task: str | None = "ct", *, seed: int = 0) -> str:
    """Write a SMALL checkpoint for `task` (its channels and scale; meta {"task": task},
    or no task at all for None) to `path`; returns the path as a string."""
    channels = 3 if task and task.startswith("sr") else 1
    scale = {"sr-x2": 2, "sr-x4": 4}.get(task or "", 1)
    torch.manual_seed(seed)
    cfg = RATConfig(in_channels=channels, out_channels=channels, scale=scale, **SMALL)
    save_checkpoint(path, build_rat(cfg), cfg, meta={} if task is None else {"task": task})
    return str(path)


class LocalSR(torch.nn.Module):
    """x2 (or x4) RGB model with a 2-px receptive field: tiles and chunks with any halo >= 2 px
    give exactly the whole-image result, so chunking can be checked bit for bit."""

    in_channels, out_channels, multiple = 3, 3, 16

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.scale = scale
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Tanh(),
                                        torch.nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x, regions=None):
        up = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return up + 0.05 * self.body(up)
