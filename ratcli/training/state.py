"""Training-state checkpoints (`last.pt`, `best.pt`): everything an exact resume needs,
and `init_from` (the weights a fine-tuning run starts from).

A state file holds the training config, the model config and weights, the optimiser,
scheduler and AMP-scaler states, the step, the best validation record and the RNG
states (torch CPU and CUDA, numpy, Python). It contains only tensors and plain Python
values, so it loads with `torch.load(weights_only=True)`. Files are written to a temp
file in the same folder and renamed into place.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import torch

from ratcli.errors import UsageError
from ratcli.models import RATConfig
from ratcli.models.checkpoint import load_tagged, save_tagged

__all__ = ["STATE_FORMAT", "save_state", "load_state", "capture_rng", "restore_rng",
           "seed_everything", "init_from"]

STATE_FORMAT = "rat-train-state/1"


def save_state(path: str | Path, state: dict) -> None:
    """Write `state` (plus the format tag) atomically to `path`."""
    save_tagged(path, STATE_FORMAT, state)


def load_state(path: str | Path) -> dict:
    """Read a state file written by `save_state`; CheckpointError if it is not one."""
    return load_tagged(path, STATE_FORMAT, "rat training state")


def capture_rng() -> dict:
    """The global RNG states as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's random (model init, patches, simulation)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def init_from(model: torch.nn.Module, weights: str, expected: RATConfig) -> None:
    """Load `weights` (path or manifest name) into `model` to fine-tune from them; their
    model settings must be `expected` (the run's), except that 2D weights may start a
    2.5D run (ratcli.training.context.inflate_2d) and weights without a noise channel a
    noise-aware run (the new channel's weights start at zero)."""
    from ratcli.models import load_checkpoint
    from ratcli.training.context import inflate_2d
    from ratcli.weights import resolve_weights

    ckpt = load_checkpoint(resolve_weights(weights))
    state = ckpt.state_dict
    # region_block changes which tokens attend to which, not the parameters
    same = dataclasses.replace(ckpt.config, region_block=expected.region_block,
                               context_slices=expected.context_slices,
                               noise_ref=expected.noise_ref) == expected
    if (not same or ckpt.config.context_slices not in (0, expected.context_slices)
            or ckpt.config.noise_ref not in (0.0, expected.noise_ref)):
        raise UsageError(f"init {weights}: its model settings differ from this run's "
                         f"({ckpt.config} vs {expected})")
    w = state["stem.weight"]  # (C1, stem inputs, 3, 3), the noise channel last
    noise = w[:, -1:] if ckpt.config.noise_ref else w.new_zeros(w.shape[0], 1, *w.shape[2:])
    if ckpt.config.noise_ref:
        state = {**state, "stem.weight": w[:, :-1]}
    if ckpt.config.context_slices != expected.context_slices:  # 2D -> 2.5D
        state = inflate_2d(state, expected)
    if expected.noise_ref:  # the weights' own noise channel, else zeros: the same model
        state = {**state, "stem.weight": torch.cat([state["stem.weight"], noise], 1)}
    model.load_state_dict({k: v.float() for k, v in state.items()})
