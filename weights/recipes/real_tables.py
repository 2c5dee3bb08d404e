"""The held-out test tables of the real-scan models (issue 12): run `rat evaluate` on every
test condition that prepare_real.py wrote, then gather the per-slice results.

    python weights/recipes/real_tables.py runs/real runs/eval/real-test \
        --weights ct=weights/rat-ct.pt --weights pet=weights/rat-pet.pt [--jobs 2]

CT: the 10 test slices (Lung-PET-CT-Dx A0002) at each dose x filter of TEST_DOSES x
FILTERS. PET: the held-out lowest third of the QIN-HEADNECK scan at 1/4 and 1/10 counts.
Every condition is one `rat evaluate` report (per-slice metrics.csv, summary.csv,
report.json) in OUT/<task>/<condition>/; conditions already evaluated are not run again,
so the test set is looked at once. `tables.md` and `tables.json` in OUT hold, per
condition, the mean PSNR of every method (HU and the W400/L40 window for CT) and the
paired difference of each model against BM3D, with a 95 % t interval over the slices.
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

from ratcli.training.metrics import summarize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_real import FILTERS, PET_DOSES, TEST_DOSES  # noqa: E402

VOLUME_ROWS = ("min", "total_change_pct", "spots", "spot_mean_change_pct",
               "spot_mean_worst_pct", "spots_within_10pct", "contrast_change_pct")


def conditions(real: Path, tasks: list[str]) -> list[tuple[str, str, Path]]:
    """(task, condition, data folder) for every test condition present."""
    out = []
    if "ct" in tasks:
        out += [("ct", f"{d}-{f}", real / "ct" / "test" / f"{d}-{f}")
                for d in TEST_DOSES for f in FILTERS]
    if "pet" in tasks:
        out += [("pet", f"test-{d}", real / "pet" / f"test-{d}") for d in PET_DOSES]
    return [c for c in out if c[2].is_dir()]


def run_one(task: str, data: Path, report: Path, weights: list[str]) -> None:
    """One `rat evaluate` report, one thread (conditions run side by side)."""
    if (report / "report.json").is_file():
        return
    cmd = [sys.executable, "-m", "ratcli", "evaluate", "--task", task, "--data", str(data),
           "-o", str(report), "--device", "cpu", "--figures", "1", "--quiet", "--overwrite"]
    for w in weights:
        cmd += ["--weights", w]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def gather(report: Path, metric: str) -> dict[str, dict[str, float]]:
    """{method: {image: value}} of one metric from a report's metrics.csv."""
    values: dict[str, dict[str, float]] = {}
    with open(report / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row[metric]:
                values.setdefault(row["method"], {})[row["image"]] = float(row[metric])
    return values


def condition_table(report: Path, metric: str) -> dict:
    """Means per method and each non-baseline method's paired difference to BM3D."""
    values = gather(report, metric)
    means = {m: float(np.mean(list(v.values()))) for m, v in values.items()}
    diffs = {}
    if "bm3d" in values:
        base = values["bm3d"]
        for m, v in values.items():
            if m not in ("input", "nlm", "tv", "bm3d"):
                d = np.array([v[i] - base[i] for i in v])
                st = summarize(d)  # mean and 95 % t interval over the slices
                diffs[m] = {"mean": st["mean"], "ci95": [st["ci95_low"], st["ci95_high"]],
                            "slices": len(d), "ahead_slices": int(np.sum(d > 0))}
    return {"mean": means, "vs_bm3d": diffs}


def markdown(tables: dict) -> str:
    lines = []
    for task_metric, rows in tables.items():
        if not rows or task_metric.endswith("volume"):
            continue
        methods = list(next(iter(rows.values()))["mean"])
        models = list(next(iter(rows.values()))["vs_bm3d"])
        lines += [f"### {task_metric}", "",
                  "| condition | " + " | ".join(methods)
                  + "".join(f" | {m} - bm3d [95% CI] (slices ahead)" for m in models) + " |",
                  "|---" * (1 + len(methods) + len(models)) + "|"]
        for cond, t in rows.items():
            cells = [f"{t['mean'][m]:.2f}" for m in methods]
            for m in models:
                d = t["vs_bm3d"][m]
                cells.append(f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] "
                             f"({d['ahead_slices']}/{d['slices']})")
            lines.append(f"| {cond} | " + " | ".join(cells) + " |")
        lines.append("")
    for cond, summary in tables.get("pet volume", {}).items():
        methods = list(summary)
        lines += [f"### PET quantification, {cond} (mean over the volume's hot spots)", "",
                  "| measure | " + " | ".join(methods) + " |", "|---" * (1 + len(methods)) + "|"]
        for r in VOLUME_ROWS:
            cells = [summary[m][r]["mean"] for m in methods]
            lines.append(f"| {r} | " + " | ".join("-" if c is None else f"{c:.3g}"
                                                  for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("real", type=Path, help="prepare_real.py's output folder")
    ap.add_argument("out", type=Path)
    ap.add_argument("--weights", action="append", default=[],
                    help="TASK=CHECKPOINT (repeat; several per task compare them)")
    ap.add_argument("--jobs", type=int, default=2, help="conditions evaluated side by side")
    args = ap.parse_args()
    weights: dict[str, list[str]] = {}
    for w in args.weights:
        task, _, path = w.partition("=")
        weights.setdefault(task, []).append(path)
    todo = conditions(args.real, list(weights))
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(run_one, t, d, args.out / t / c, weights[t]) for t, c, d in todo]
        for j in jobs:
            j.result()
    tables: dict[str, dict] = {}
    for task, cond, _ in todo:
        report = args.out / task / cond
        metrics = ("psnr", "psnr_window") if task == "ct" else ("psnr",)
        for metric in metrics:
            tables.setdefault(f"{task} {metric}", {})[cond] = condition_table(report, metric)
        if task == "pet":
            vs = json.loads((report / "report.json").read_text()).get("volume_summary", {})
            tables.setdefault("pet volume", {})[cond] = vs
    (args.out / "tables.json").write_text(json.dumps(tables, indent=1) + "\n")
    (args.out / "tables.md").write_text(markdown(tables) + "\n")
    print(markdown(tables))


if __name__ == "__main__":
    main()
