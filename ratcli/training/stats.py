"""Paired comparisons of models with the best classical baseline, per image.

    compare_to_best(rows, models=["rat-ct"], baselines=["bm3d", "tv-best"],
                    metrics=("psnr",))

Every method is scored on the same images, so a model and a baseline are compared
through their per-image differences d_i = model_i - baseline_i: the mean difference, its
two-sided 95 % Student t interval (metrics.summarize: mean +- t_0.975,n-1 * sd / sqrt n),
and the images where the model is ahead (d_i > 0) or behind (d_i < 0). Pairing removes
the variation between images that both methods share, so the interval is much narrower
than one from the two means' own intervals.

"The best baseline" of a set of images is the baseline with the highest mean of the
metric there, chosen per metric and per scope (all images; each volume when there are
several); `input` (no filter) only counts when no other baseline was run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ratcli.training.metrics import summarize

__all__ = ["paired_difference", "best_baseline", "compare_to_best", "COMPARISON_KEYS"]

# Keys of each compare_to_best record.
COMPARISON_KEYS: tuple[str, ...] = (
    "metric", "scope", "model", "baseline", "model_mean", "baseline_mean", "n", "mean",
    "std", "ci95_low", "ci95_high", "ahead", "behind")


def paired_difference(model: Mapping[str, float], baseline: Mapping[str, float]) -> dict:
    """Statistics of model - baseline over the images (keys) both have finite values for:
    n, mean, std, ci95_low, ci95_high (metrics.summarize), ahead and behind (counts of
    images with a positive and a negative difference)."""
    keys = [k for k in model if k in baseline
            and math.isfinite(model[k]) and math.isfinite(baseline[k])]
    d = np.array([model[k] - baseline[k] for k in keys], dtype=np.float64)
    return {**summarize(d), "ahead": int(np.sum(d > 0)), "behind": int(np.sum(d < 0))}


def best_baseline(values: Mapping[str, Mapping[str, float]],
                  baselines: Sequence[str]) -> str | None:
    """The baseline with the highest finite mean in `values` ({method: {image: value}});
    `input` only when it is the only one; None when no baseline has a finite value."""
    means = {b: _mean(values.get(b, {})) for b in baselines}
    means = {b: m for b, m in means.items() if math.isfinite(m)}
    filters = {b: m for b, m in means.items() if b != "input"}
    pool = filters or means
    return max(pool, key=lambda b: pool[b]) if pool else None


def compare_to_best(rows: Sequence[Mapping], *, models: Sequence[str],
                    baselines: Sequence[str], metrics: Sequence[str]) -> list[dict]:
    """One record (COMPARISON_KEYS) per metric, scope and model: the model's paired
    difference to the scope's best baseline for that metric.

    rows: per-image records with `image` ("<volume>[<z>]"), `method` and the metric
    columns (evaluate.py's rows). scope: "all", then each volume when there are several.
    Metrics without a finite value for any baseline are left out.
    """
    out: list[dict] = []
    volumes = list(dict.fromkeys(_volume(r["image"]) for r in rows))
    scopes = ["all"] + (volumes if len(volumes) > 1 else [])
    for metric in metrics:
        for scope in scopes:
            values: dict[str, dict[str, float]] = {}
            for r in rows:
                if scope == "all" or _volume(r["image"]) == scope:
                    values.setdefault(r["method"], {})[r["image"]] = float(r[metric])
            best = best_baseline(values, baselines)
            if best is None:
                continue
            for m in models:
                stats = paired_difference(values.get(m, {}), values[best])
                out.append({"metric": metric, "scope": scope, "model": m, "baseline": best,
                            "model_mean": _mean(values.get(m, {})),
                            "baseline_mean": _mean(values[best]), **stats})
    return out


def _volume(image: str) -> str:
    """'case0.nii.gz[3]' -> 'case0.nii.gz'."""
    return image.rsplit("[", 1)[0]


def _mean(values: Mapping[str, float]) -> float:
    v = np.array([x for x in values.values() if math.isfinite(x)], dtype=np.float64)
    return float(v.mean()) if v.size else math.nan
