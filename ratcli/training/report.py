"""Evaluation report files: per-image CSV, summary CSV and the JSON report.

Columns of `metrics.csv` (one row per image and method): image, method, kind
(model | baseline), then METRIC_COLUMNS (psnr, ssim, rmse, psnr_window, ssim_window,
rmse_window, psnr_y8, ssim_y8, overshoot, ringing, edge_smear; empty where a task has no
such metric, `inf` for a perfect match), seconds (compute time per image) and setting
(the grid baselines' choice for the image, e.g. `weight=0.707x sigma`; else empty).

Columns of `summary.csv` (one row per method and metric): method, kind, metric, n,
mean, std, ci95_low, ci95_high.

`report.json`: task, data, degradation, methods, definitions (what each metric means
for this task), summary {method: {metric: {n, mean, std, ci95_low, ci95_high}}},
comparisons (stats.compare_to_best: each model's paired difference to the best
baseline, per PSNR metric) and images (the rows of metrics.csv); NaN is written as null
and infinity as "inf".
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ratcli.tasks import TaskSpec
from ratcli.training.metrics import CT_DISPLAY_WINDOW, METRIC_COLUMNS

__all__ = ["IMAGE_COLUMNS", "SUMMARY_COLUMNS", "write_image_csv", "write_summary_csv",
           "write_json", "figure_display"]

IMAGE_COLUMNS: tuple[str, ...] = ("image", "method", "kind", *METRIC_COLUMNS, "seconds",
                                  "setting")
SUMMARY_COLUMNS: tuple[str, ...] = ("method", "kind", "metric", "n", "mean", "std",
                                    "ci95_low", "ci95_high")


def write_image_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=IMAGE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in IMAGE_COLUMNS})


def write_summary_csv(path: Path, summary: dict[str, dict], kinds: dict[str, str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for method, metrics in summary.items():
            for metric, stats in metrics.items():
                writer.writerow({"method": method, "kind": kinds[method], "metric": metric,
                                 **{k: _cell(v) for k, v in stats.items()}})


def write_json(path: Path, report: dict) -> None:
    path.write_text(json.dumps(_jsonable(report), indent=2) + "\n")


def _cell(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _jsonable(value):
    """NaN -> None, inf -> "inf", recursively (strict JSON has neither)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def figure_display(task: TaskSpec, shown: list[tuple[str, dict]]) -> tuple[tuple | None, float]:
    """Greyscale window and error-map top for the figure: CT soft-tissue window with
    errors up to a quarter of it; PET per-row target range with errors up to a quarter
    of the largest target; RGB with errors up to 64 levels."""
    if task.norm == "hu":
        lo, hi = CT_DISPLAY_WINDOW
        return (lo, hi), (hi - lo) / 4
    if task.norm == "uint8":
        return None, 64.0
    top = max((float(np.max(p["target"])) for _, p in shown), default=1.0)
    return None, max(top, 1e-6) / 4
