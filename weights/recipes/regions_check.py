"""Does a CT model use its region maps? Validation PSNR with the classical regions it was
trained with, with LiteMedSAM's maps (when installed), with the maps flipped (same
sizes, misaligned with the anatomy), a regular 16-px grid, one region per image, another
slice's maps, and with each attention branch switched off (lambda_r or lambda_w zeroed);
plus region counts per 64-px R-MSA cell.

    python weights/recipes/regions_check.py runs/real/ct/val runs/ct-real-s0/model.pt ...

VAL is a paired folder written by prepare_real.py (low/ and full/ NIfTI, HU).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ratcli import io
from ratcli.errors import RatError
from ratcli.models import load_checkpoint
from ratcli.regions import ClassicalPartitioner
from ratcli.tasks import TASKS
from ratcli.training.metrics import psnr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("val", type=Path)
    ap.add_argument("models", nargs="+", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = TASKS["ct"]
    low = np.concatenate([io.read(f).array for f in sorted((args.val / "low").iterdir())])
    full = np.concatenate([io.read(f).array for f in sorted((args.val / "full").iterdir())])
    params = task.norm_params(low)
    x = task.normalize(low, params)
    labels = np.stack([ClassicalPartitioner()(s) for s in x])
    Z, H, W = labels.shape
    cells = [len(np.unique(labels[z, y:y + 64, c:c + 64]))
             for z in range(Z) for y in range(0, H, 64) for c in range(0, W, 64)]
    print(f"regions per slice {[len(np.unique(s)) for s in labels]}; per 64-px cell "
          f"mean {np.mean(cells):.2f}, one region in {np.mean(np.array(cells) == 1):.0%}")
    yy, xx = np.mgrid[:H, :W]
    maps = {"classical": labels, **_litemedsam_maps(x, task), "flipped": labels[:, ::-1, ::-1],
            "grid 16px": np.broadcast_to((yy // 16) * (W // 16 + 1) + xx // 16, labels.shape),
            "one region": np.zeros_like(labels), "other slice": np.roll(labels, 1, axis=0)}
    print(f"input {np.mean([psnr(low[z], full[z], 4096.0) for z in range(Z)]):.3f}")
    for path in args.models:
        ckpt = load_checkpoint(path)
        res = {name: _score(ckpt.build("cpu"), x, lab, full, params, task)
               for name, lab in maps.items()}
        for branch in ("lambda_r", "lambda_w"):
            model = ckpt.build("cpu")
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith(branch):
                        p.zero_()
            res[f"{branch}=0"] = _score(model, x, labels, full, params, task)
        print(path, "  ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True)


def _litemedsam_maps(x: np.ndarray, task) -> dict[str, np.ndarray]:
    """{"litemedsam": (Z, H, W) maps} of the normalised slices, or {} when not installed."""
    from ratcli.regions import make_partitioner

    try:
        part = make_partitioner("litemedsam", cache=True).for_task(task)
    except RatError:  # not installed
        return {}
    return {"litemedsam": np.stack([part(s) for s in x])}


def _score(model, x, labels, full, params, task) -> float:
    """Mean PSNR (HU, 4096 HU range) of the model's output with these region maps."""
    out = []
    with torch.inference_mode():
        for z in range(len(x)):
            r = torch.from_numpy(np.ascontiguousarray(labels[z:z + 1]).astype(np.int64))
            out.append(model(torch.from_numpy(x[z:z + 1, None]), r)[0, 0].numpy())
    o = task.denormalize(np.stack(out), params)
    return float(np.mean([psnr(o[z], full[z], 4096.0) for z in range(len(x))]))


if __name__ == "__main__":
    main()
