"""The held-out test tables of the real-scan models (issues 12, 22): run `rat evaluate` on
every test condition that prepare_real.py (and prepare_pet_brain.py) wrote, then gather
the per-slice results.

    python weights/recipes/real_tables.py runs/real runs/eval/real-test \
        --weights ct=weights/rat-ct.pt --weights pet=weights/rat-pet.pt [--jobs 2] \
        [--baselines pet=input,gauss-best,bm3d,tv-best,nlm-best]

CT: the 10 test slices (Lung-PET-CT-Dx A0002) at each dose x filter of TEST_DOSES x
FILTERS. PET: the held-out lowest third of the QIN-HEADNECK scan at 1/4 and 1/10 counts
(`test-d4`, `test-d10`) and, where runs/real/pet-brain/ exists, the unseen brain amyloid
PET (`brain-d4`, `brain-d10`). Every condition is one `rat evaluate` report (per-slice
metrics.csv, summary.csv, report.json) in OUT/<task>/<condition>/; conditions already
evaluated are not run again, so the test set is looked at once. --baselines TASK=LIST
is passed to `rat evaluate --baselines` (default: evaluate's own, every baseline but
bm3d-best).

`tables.md` and `tables.json` in OUT hold, per condition, the mean PSNR of every method
(HU and the W400/L40 window for CT) and each model's paired difference to the condition's
best baseline: the baseline with the highest mean (the `*-best` ones are oracles that
pick their setting with the target), with the 95 % t interval over the slices and the
slices where the model is ahead. Which method is a model and which a baseline comes from
metrics.csv's `kind` column; the comparison is the report's own (`comparisons`,
ratcli.training.stats), recomputed with the same function for reports that lack it.
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

from ratcli.training.baselines import BASELINES
from ratcli.training.stats import compare_to_best

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
        out += [("pet", f"brain-{d}", real / "pet-brain" / f"test-{d}") for d in PET_DOSES]
    return [c for c in out if c[2].is_dir()]


def run_one(task: str, data: Path, report: Path, weights: list[str],
            baselines: str | None = None) -> None:
    """One `rat evaluate` report, one thread (conditions run side by side)."""
    if (report / "report.json").is_file():
        return
    cmd = [sys.executable, "-m", "ratcli", "evaluate", "--task", task, "--data", str(data),
           "-o", str(report), "--device", "cpu", "--figures", "1", "--quiet", "--overwrite"]
    for w in weights:
        cmd += ["--weights", w]
    if baselines:
        cmd += ["--baselines", baselines]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def read_rows(report: Path) -> list[dict]:
    """metrics.csv's rows; `kind` filled in for reports written before it existed."""
    with open(report / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["kind"] = r.get("kind") or ("baseline" if r["method"] in BASELINES else "model")
    return rows


def condition_table(report: Path, metric: str) -> dict:
    """Mean of `metric` per method (baselines first), and each model's paired difference
    to the best baseline over all slices of the condition."""
    rows = [r for r in read_rows(report) if r[metric]]
    kinds = {r["method"]: r["kind"] for r in rows}
    baselines = [m for m, k in kinds.items() if k == "baseline"]
    models = [m for m, k in kinds.items() if k == "model"]
    means = {m: float(np.mean([float(r[metric]) for r in rows if r["method"] == m]))
             for m in baselines + models}
    stored = json.loads((report / "report.json").read_text()).get("comparisons")
    comps = stored if stored is not None else compare_to_best(
        rows, models=models, baselines=baselines, metrics=(metric,))
    vs_best = {c["model"]: {"baseline": c["baseline"], "mean": c["mean"],
                            "ci95": [c["ci95_low"], c["ci95_high"]], "slices": c["n"],
                            "ahead_slices": c["ahead"]}
               for c in comps if c["metric"] == metric and c["scope"] == "all"}
    settings = {m: sorted({r["setting"] for r in rows if r["method"] == m and r.get("setting")})
                for m in baselines}
    return {"mean": means, "baselines": baselines, "models": models, "vs_best": vs_best,
            "settings": {m: s for m, s in settings.items() if s}}


def markdown(tables: dict) -> str:
    lines = []
    for task_metric, rows in tables.items():
        if not rows or task_metric.endswith("volume"):
            continue
        first = next(iter(rows.values()))
        methods = list(first["mean"])
        models = first["models"]
        lines += [f"### {task_metric}", "",
                  "| condition | " + " | ".join(methods)
                  + "".join(f" | {m} - best baseline [95% CI] (slices ahead)" for m in models)
                  + " |", "|---" * (1 + len(methods) + len(models)) + "|"]
        for cond, t in rows.items():
            cells = [f"{t['mean'][m]:.2f}" if m in t["mean"] else "-" for m in methods]
            for m in models:
                d = t["vs_best"].get(m)
                cells.append("-" if d is None else
                             f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] "
                             f"({d['ahead_slices']}/{d['slices']}) vs {d['baseline']}")
            lines.append(f"| {cond} | " + " | ".join(cells) + " |")
        lines.append("")
        for cond, t in rows.items():
            for m, s in t.get("settings", {}).items():
                shown = ", ".join(s[:4]) + (f", ... ({len(s)} settings)" if len(s) > 4 else "")
                lines.append(f"- {cond} {m}: {shown}")
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
    ap.add_argument("--baselines", action="append", default=[],
                    help="TASK=LIST: `rat evaluate --baselines LIST` for that task")
    args = ap.parse_args()
    chosen = dict(b.partition("=")[::2] for b in args.baselines)
    weights: dict[str, list[str]] = {}
    for w in args.weights:
        task, _, path = w.partition("=")
        weights.setdefault(task, []).append(path)
    todo = conditions(args.real, list(weights))
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(run_one, t, d, args.out / t / c, weights[t], chosen.get(t))
                for t, c, d in todo]
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
