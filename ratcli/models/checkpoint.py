"""One-file checkpoints: model config + state dict + metadata, loadable with
`torch.load(weights_only=True)` (no pickled code is ever executed).

`save_tagged` / `load_tagged` are the shared format-tagged file helpers; training states
(`ratcli.training.state`) use them too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ratcli.checksum import cached_sha256, sha256_file
from ratcli.errors import CheckpointError
from ratcli.io.atomic import atomic_output
from ratcli.models.rat import RATConfig, RegionAttentionTransformer, build_rat

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "save_tagged", "load_tagged",
           "sha256_file"]

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
    payload = {"config": config.to_dict(), "state_dict": state, "meta": dict(meta or {})}
    save_tagged(path, FORMAT, payload)
    return sha256_file(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint written by `save_checkpoint`."""
    payload = load_tagged(path, FORMAT, "rat checkpoint")
    try:
        config = RATConfig(**_with_sca_window(payload["config"]))
    except (TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: bad model config in checkpoint ({exc})") from exc
    # remembered by (size, mtime): resolve_weights usually hashed this file just now
    return Checkpoint(config, payload["state_dict"], payload.get("meta", {}), Path(path),
                      cached_sha256(path))


def _with_sca_window(config: dict) -> dict:
    """Configs written before `RATConfig.sca_window` existed: those models were validated
    with the channel attention pooled over the then-default tile, 256 px (512 output px
    for SR), so they keep computing that on today's larger tiles (weights/README.md,
    "Tiles and channel attention")."""
    if "sca_window" in config:
        return config
    return {**config, "sca_window": 256 if config.get("scale", 1) == 1 else 512}


def save_tagged(path: str | Path, fmt: str, payload: dict) -> None:
    """torch.save `payload` plus {"format": fmt} to `path` atomically (temp + rename)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        torch.save({"format": fmt, **payload}, tmp)


def load_tagged(path: str | Path, fmt: str, what: str) -> dict:
    """Load a file written by `save_tagged` with weights_only=True; CheckpointError naming
    the file when it is missing, unreadable, or not a `what` of format `fmt`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} file not found")
    try:
        with warnings.catch_warnings():
            # torch's unpickler warns (two lines) about a pickle protocol it does not
            # expect before refusing a pickle; rat's one error line says it all
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        reason = exc.__class__.__name__
        raise CheckpointError(f"{path}: not a readable {what} ({reason})") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {what} (expected format {fmt})")
    return payload
