"""Turn a finished run's model.pt into a shipped checkpoint and record it in the manifest.

    python weights/recipes/export.py runs/ct/model.pt rat-ct [--fp32]

Writes `weights/<file of NAME>` (fp16 weights unless --fp32; `Checkpoint.build` casts
back to float32) with the run's meta plus {"name", "storage"}, then sets the manifest
entry's sha256 (adding the entry for a name the manifest lacks, e.g. the ablation).
Prints the file and its sha256. --region-block N sets the model's R-MSA cell (the
training patch; runs started before `RATConfig.region_block` existed export 0).
--sca-window N sets `RATConfig.sca_window` (the tile edge the model was validated with;
checkpoints written before it existed load with 256, or 512 output px for SR).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

from ratcli.models import load_checkpoint, save_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1]
MANIFEST = WEIGHTS / "manifest.json"


def export(run_model: Path, name: str, *, half: bool = True, description: str | None = None,
           region_block: int | None = None, sca_window: int | None = None
           ) -> tuple[Path, str]:
    """Write the shipped file for manifest entry `name`; returns (path, sha256)."""
    ckpt = load_checkpoint(run_model)
    if region_block is not None:
        ckpt.config = dataclasses.replace(ckpt.config, region_block=region_block)
    if sca_window is not None:
        ckpt.config = dataclasses.replace(ckpt.config, sca_window=sca_window)
    manifest = json.loads(MANIFEST.read_text())
    entry = manifest["weights"].setdefault(name, {
        "file": f"{name}.pt", "kind": "rat", "task": ckpt.meta.get("task"), "url": None,
        "sha256": None, "description": description or name})
    dest = WEIGHTS / entry["file"]
    meta = ckpt.meta | {"name": name, "storage": "fp16" if half else "fp32"}
    sha = save_checkpoint(dest, ckpt.state_dict, ckpt.config, meta, half=half)
    dest.chmod(0o644)  # save_checkpoint's temp file is private; a shipped file is not
    entry["sha256"] = sha
    if description:
        entry["description"] = description
    _write_json(MANIFEST, manifest)
    return dest, sha


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a run's model.pt")
    parser.add_argument("name", help="manifest name (rat-ct, rat-pet, rat-sr-x2, ...)")
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights")
    parser.add_argument("--description", help="manifest description")
    parser.add_argument("--region-block", type=int, help="R-MSA cell in pixels (the patch)")
    parser.add_argument("--sca-window", type=int, help="channel-attention box in output pixels")
    args = parser.parse_args()
    path, sha = export(args.model, args.name, half=not args.fp32, description=args.description,
                       region_block=args.region_block, sca_window=args.sca_window)
    print(f"{path}  sha256 {sha}")
