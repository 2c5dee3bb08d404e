"""Paired comparison of a model with the best baseline (issue 22 item 5): the mean
difference, its 95 % t interval and the images ahead, on hand-computed examples."""

from __future__ import annotations

import math

import pytest

from ratcli.training.stats import (
    COMPARISON_KEYS,
    best_baseline,
    compare_to_best,
    paired_difference,
)

T_975_3 = 3.182446305284263  # Student t quantile 0.975, 3 degrees of freedom


def test_paired_difference_by_hand():
    model = {"a": 12.0, "b": 9.0, "c": 11.0, "d": 12.0, "e": math.inf, "only-model": 1.0}
    base = {"a": 10.0, "b": 10.0, "c": 10.0, "d": 10.0, "e": 10.0}
    st = paired_difference(model, base)
    # d = 2, -1, 1, 2 (e: not finite, only-model: unpaired): mean 1, sd sqrt(6/3)
    half = T_975_3 * math.sqrt(2.0) / 2.0
    assert st["n"] == 4 and st["mean"] == pytest.approx(1.0)
    assert st["std"] == pytest.approx(math.sqrt(2.0))
    assert st["ci95_low"] == pytest.approx(1.0 - half)  # -1.2504
    assert st["ci95_high"] == pytest.approx(1.0 + half)  # 3.2504
    assert (st["ahead"], st["behind"]) == (3, 1)


def test_best_baseline_ignores_input_unless_alone():
    values = {"input": {"x": 50.0}, "tv": {"x": 30.0, "y": 32.0}, "bm3d": {"x": 33.0},
              "nan": {"x": math.nan}}
    assert best_baseline(values, ["input", "tv", "bm3d", "nan"]) == "bm3d"
    assert best_baseline(values, ["input"]) == "input"
    assert best_baseline(values, ["nan"]) is None


def test_compare_to_best_per_metric_and_volume():
    rows = []
    # volume A: tv is best; volume B: bm3d is best; over all images bm3d (mean 31 vs 30.5)
    for image, tv, bm3d, model in (("A[0]", 32, 30, 33), ("A[1]", 31, 30, 30),
                                   ("B[0]", 30, 33, 34), ("B[1]", 29, 31, 32)):
        for method, v in (("tv", tv), ("bm3d", bm3d), ("m", model)):
            rows.append({"image": image, "method": method, "psnr": float(v),
                         "psnr_window": math.nan})
    out = compare_to_best(rows, models=["m"], baselines=["tv", "bm3d"],
                          metrics=("psnr", "psnr_window"))
    assert all(tuple(r) == COMPARISON_KEYS for r in out)
    by_scope = {r["scope"]: r for r in out}
    assert list(by_scope) == ["all", "A", "B"]  # psnr_window: no finite value, left out
    assert by_scope["all"]["baseline"] == "bm3d" and by_scope["all"]["n"] == 4
    assert by_scope["all"]["mean"] == pytest.approx((3 + 0 + 1 + 1) / 4)
    assert by_scope["all"]["ahead"] == 3 and by_scope["all"]["behind"] == 0
    assert by_scope["A"]["baseline"] == "tv" and by_scope["A"]["mean"] == pytest.approx(0.0)
    assert (by_scope["A"]["ahead"], by_scope["A"]["behind"]) == (1, 1)
    assert by_scope["B"]["baseline_mean"] == pytest.approx(32.0)
    assert by_scope["B"]["model_mean"] == pytest.approx(33.0)
