"""One-file checkpoints: model config + state dict + metadata, loadable with
`torch.load(weights_only=True)` (no pickled code is ever executed)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ratcli.errors import CheckpointError
from ratcli.models.rat import RATConfig, RegionAttentionTransformer, build_rat

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "sha256_file"]

FORMAT = "rat-checkpoint/1"


@dataclass
class Checkpoint:
    """A loaded checkpoint. `meta` holds task, normalisation and training provenance."""

    config: RATConfig
    state_dict: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None

    def build(self, device: str | torch.device = "cpu") -> RegionAttentionTransformer:
        """The network with these weights, in eval mode, float32."""
        model = build_rat(self.config)
        model.load_state_dict({k: v.float() for k, v in self.state_dict.items()})
        return model.to(device).eval()


def save_checkpoint(
    path: str | Path,
    model: RegionAttentionTransformer | dict[str, torch.Tensor],
    config: RATConfig,
    meta: dict | None = None,
    half: bool = False,
) -> str:
    """Write a checkpoint atomically; returns its sha256. `half` stores floats as fp16."""
    state = model.state_dict() if hasattr(model, "state_dict") else model
    state = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in state.items()
    }
    payload = {
        "format": FORMAT,
        "config": config.to_dict(),
        "state_dict": state,
        "meta": dict(meta or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sha256_file(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        reason = exc.__class__.__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a rat checkpoint (expected format {FORMAT})")
    try:
        config = RATConfig(**payload["config"])
    except TypeError as exc:
        raise CheckpointError(f"{path}: bad model config in checkpoint ({exc})") from exc
    return Checkpoint(config, payload["state_dict"], payload.get("meta", {}), path,
                      sha256_file(path))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
