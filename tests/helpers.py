"""Helpers shared by the tests: tiny random-init RAT checkpoints (fast on one CPU core)."""

from __future__ import annotations

from pathlib import Path

import torch

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
