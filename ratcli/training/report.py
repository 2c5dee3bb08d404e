"""Evaluation report files: per-image CSV, summary CSV and the JSON report.

Columns of `metrics.csv` (one row per image and method): image, method, kind
(model | baseline), then METRIC_COLUMNS (psnr, ssim, rmse, psnr_window, ssim_window,
rmse_window, psnr_y8, ssim_y8, overshoot, ringing, edge_smear; empty where a task has no
such metric, `inf` for a perfect match) and seconds (compute time per image).

Columns of `summary.csv` (one row per method and metric): method, kind, metric, n,
mean, std, ci95_low, ci95_high.

`report.json`: task, data, degradation, methods, definitions (what each metric means
for this task), summary {method: {metric: {n, mean, std, ci95_low, ci95_high}}} and
images (the rows of metrics.csv); NaN is written as null and infinity as "inf".
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ratcli.training.metrics import METRIC_COLUMNS

__all__ = ["IMAGE_COLUMNS", "SUMMARY_COLUMNS", "write_image_csv", "write_summary_csv",
           "write_json"]

IMAGE_COLUMNS: tuple[str, ...] = ("image", "method", "kind", *METRIC_COLUMNS, "seconds")
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
