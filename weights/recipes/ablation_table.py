"""The region-maps ablation table from `weights/recipes/ablation.sh` runs.

    python weights/recipes/ablation_table.py runs/abl-ct [--variants a,b,c]

Reads RUNS/<variant>-s<seed>/metrics.jsonl for the variants litemedsam, classical and
window-only (or --variants, e.g. w16-2d,w16-2.5d,w32-2d for `ct_size.sh`), takes each
run's validation PSNR at its best validation loss (the step its exported model.pt comes
from), and prints per seed, mean +- std over seeds, and the paired differences (same
seed) between the variants with their 95 % t interval.
"""

from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import stats

VARIANTS = ("litemedsam", "classical", "window-only")


def best_psnr(run: Path) -> float | None:
    """val_psnr at the lowest val_loss of a run, or None when it has not validated."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return None
    vals = [r for r in map(json.loads, path.read_text().splitlines()) if "val_loss" in r]
    return min(vals, key=lambda r: r["val_loss"])["val_psnr"] if vals else None


def paired(a: np.ndarray, b: np.ndarray) -> str:
    d = a - b
    if len(d) < 2:
        return f"{d.mean():+.3f}"
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma list of the variants (run folders <variant>-s<seed>)")
    args = ap.parse_args()
    variants = tuple(args.variants.split(","))
    seeds = sorted({int(p.name.rsplit("-s", 1)[1]) for p in args.runs.glob("*-s*")
                    if p.is_dir()})
    table = {v: [best_psnr(args.runs / f"{v}-s{s}") for s in seeds] for v in variants}
    print("| seed | " + " | ".join(variants) + " |")
    print("|---|" + "---:|" * len(variants))
    for i, s in enumerate(seeds):
        cells = ["-" if table[v][i] is None else f"{table[v][i]:.3f}" for v in variants]
        print(f"| {s} | " + " | ".join(cells) + " |")
    done = [i for i in range(len(seeds)) if all(table[v][i] is not None for v in variants)]
    arr = {v: np.array([table[v][i] for i in done]) for v in variants}
    if done:
        print("| mean +- std | " + " | ".join(
            f"{arr[v].mean():.3f} +- {arr[v].std(ddof=1) if len(done) > 1 else 0:.3f}"
            for v in variants) + " |")
        print(f"\npaired differences over {len(done)} seeds (dB, 95 % t interval):")
        for a, b in combinations(variants, 2):
            print(f"- {a} - {b}: {paired(arr[a], arr[b])}")


if __name__ == "__main__":
    main()
