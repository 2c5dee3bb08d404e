"""Print the model-card tables (markdown) from `rat evaluate` reports.

    python weights/recipes/tables.py runs/eval/ct runs/eval/pet-d4 ...

One table per report: a row per method (baselines first, then models) with mean PSNR,
SSIM and RMSE in physical units (and the CT display-window PSNR), plus n images.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = {"psnr": ("PSNR (dB)", 2), "ssim": ("SSIM", 4), "rmse": ("RMSE", 2),
           "psnr_window": ("PSNR W400/L40 (dB)", 2), "psnr_y8": ("PSNR uint8-Y (paper-style)", 2)}


def table(report_dir: Path) -> str:
    report = json.loads((report_dir / "report.json").read_text())
    summary = report["summary"]
    cols = [c for c in COLUMNS if any(summary[m][c]["mean"] is not None for m in summary)]
    lines = [f"`{report_dir.name}` ({report['task']}, n = "
             f"{next(iter(summary.values()))['psnr']['n']} images)", "",
             "| method | " + " | ".join(COLUMNS[c][0] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for method, stats in summary.items():
        cells = []
        for c in cols:
            s = stats[c]
            cells.append("-" if s["mean"] is None else f"{s['mean']:.{COLUMNS[c][1]}f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
