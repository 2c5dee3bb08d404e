"""The CT test matrix of issue 22 (item 5): every held-out scan x dose x FBP filter that
prepare_ct_wide.py wrote (runs/real/ct-wide/test/<dose>-<filter>/, the InVesalius head and
the Biograph mCT contrast abdomen, 10 slices each), restored by each model and the
classical baselines, reported per scan.

    python weights/recipes/ct_test_matrix.py runs/real/ct-wide/test runs/eval/ct-test \
        --base rat-ct --model pair=runs/ct-pair-long/model.pt:pair \
        --model blind=runs/ct-pair-long/model.pt:blind [--jobs 2]

`--base` weights are evaluated with the baselines (input, BM3D with the true sigma and the
oracle tv-best) in OUT/base/<cell>/; each `--model NAME=WEIGHTS:NOISE` alone in
OUT/NAME/<cell>/ with `rat evaluate --noise NOISE` (pair: told each slice's added noise
std, as BM3D is; blind: nothing, as `rat denoise`). Reports already written are not run
again, so the test is looked at once per model. tables.md / tables.json in OUT: per scan
and cell, the added noise std (HU, robust std of input - target), the mean PSNR over 4096
HU of every method, and each model's paired difference to the best classical baseline
(the higher mean of bm3d and tv-best; tv-best alone in cells run with --baselines
input,tv-best) with its 95 % t interval and the slices ahead.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ratcli.inference.noise import pair_noise
from ratcli.io import read
from ratcli.training.stats import compare_to_best

BASELINES = "input,bm3d,tv-best"
ORDER = ("d4", "d10", "d16", "d2")  # quarter dose first: the acceptance's own cells


def evaluate(data: Path, report: Path, weights: str, *, baselines: str, noise: str) -> None:
    if (report / "report.json").is_file():
        return
    cmd = [sys.executable, "-m", "ratcli", "evaluate", "--task", "ct", "--data", str(data),
           "-o", str(report), "--device", "cpu", "--figures", "0", "--quiet", "--overwrite",
           "--weights", weights, "--baselines", baselines, "--noise", noise]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def rows_of(report: Path, rename: str | None = None) -> list[dict]:
    with open(report / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rename is not None:  # a model-only report: its one model under the run's name
        rows = [dict(r, method=rename) for r in rows if r["kind"] == "model"]
    return rows


def added_noise(cell: Path, scan: str) -> float:
    """Mean over the scan's slices of the robust std of input - target (HU)."""
    stds = [pair_noise(read(p).array, read(cell / "full" / p.name).array)
            for p in sorted((cell / "low").glob(f"{scan}-*"))]
    return float(np.mean(stds))


def table(cells: list[Path], out: Path, models: list[str]) -> dict:
    result: dict = {}
    for cell in cells:
        if not all((out / n / cell.name / "metrics.csv").is_file() for n in ["base", *models]):
            continue  # not evaluated (yet): left out of the tables
        rows = rows_of(out / "base" / cell.name)
        for name in models:
            rows += rows_of(out / name / cell.name, rename=name)
        methods = list(dict.fromkeys(r["method"] for r in rows))
        ranked = [m for m in methods if any(r["method"] == m and r["kind"] == "model"
                                            for r in rows)]
        for scan in sorted({r["image"].split("-z")[0] for r in rows}):
            mine = [r for r in rows if r["image"].startswith(f"{scan}-z")]
            means = {m: float(np.mean([float(r["psnr"]) for r in mine if r["method"] == m]))
                     for m in methods}
            comps = compare_to_best(mine, models=ranked, baselines=["bm3d", "tv-best"],
                                    metrics=("psnr",))
            result.setdefault(scan, {})[cell.name] = {
                "noise_hu": added_noise(cell, scan), "slices": len(mine) // len(methods),
                "mean": means,
                "vs_best": {c["model"]: {k: c[k] for k in ("baseline", "mean", "ci95_low",
                                                             "ci95_high", "ahead", "n")}
                            for c in comps if c["scope"] == "all"}}
    return result


def markdown(result: dict) -> str:
    lines = []
    for scan, cells in result.items():
        methods = list(dict.fromkeys(m for t in cells.values() for m in t["mean"]))
        models = list(dict.fromkeys(m for t in cells.values() for m in t["vs_best"]))
        lines += [f"### {scan}", "", "| cell | added noise (HU) | " + " | ".join(methods)
                  + "".join(f" | {m} - best [95% CI] (ahead)" for m in models) + " |",
                  "|---" * (2 + len(methods) + len(models)) + "|"]
        for name, t in cells.items():
            cells_ = [f"{t['mean'][m]:.2f}" if m in t["mean"] else "not run" for m in methods]
            for m in models:
                d = t["vs_best"][m]
                cells_.append(f"{d['mean']:+.2f} [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}]"
                              f" ({d['ahead']}/{d['n']}) vs {d['baseline']}")
            lines.append(f"| {name} | {t['noise_hu']:.1f} | " + " | ".join(cells_) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("test", type=Path, help="prepare_ct_wide.py's test folder")
    ap.add_argument("out", type=Path)
    ap.add_argument("--base", default="rat-ct", help="weights evaluated with the baselines")
    ap.add_argument("--model", action="append", default=[], help="NAME=WEIGHTS:NOISE")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--baselines", default=BASELINES, help="for the --base reports (BM3D "
                    "takes about a minute per 512^2 slice here; the tables name the cells "
                    "without it)")
    ap.add_argument("--cells", default="", help="only these cells, e.g. d4-ramp,d4-hann")
    args = ap.parse_args()
    cells = sorted((p for p in args.test.iterdir() if (p / "low").is_dir()),
                   key=lambda p: (ORDER.index(p.name.split("-")[0]), p.name))
    if args.cells:
        cells = [c for c in cells if c.name in args.cells.split(",")]
    models = {}
    for spec in args.model:
        name, _, rest = spec.partition("=")
        weights, _, noise = rest.rpartition(":")
        models[name] = (weights, noise)
    jobs = [(c, args.out / "base" / c.name, args.base, args.baselines, "blind") for c in cells]
    jobs += [(c, args.out / n / c.name, w, "input", noise)
             for n, (w, noise) in models.items() for c in cells]
    with ThreadPoolExecutor(args.jobs) as pool:
        for j in [pool.submit(evaluate, c, r, w, baselines=b, noise=n)
                  for c, r, w, b, n in jobs]:
            j.result()
    result = table(cells, args.out, list(models))
    (args.out / "tables.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "tables.md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
