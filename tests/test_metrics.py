"""Metrics agree with closed forms and with scikit-image on known images."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ratcli.tasks import TASKS
from ratcli.training.metrics import (
    CT_DISPLAY_WINDOW,
    METRIC_COLUMNS,
    definitions,
    image_metrics,
    psnr,
    rgb_to_y,
    summarize,
)


def _ssim(a, b, rng, channel_axis=None):
    return structural_similarity(b, a, data_range=rng, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=channel_axis)


def test_psnr_closed_form_and_identical_images():
    t = np.zeros((16, 16))
    assert psnr(t + 10.0, t, 4096.0) == pytest.approx(20 * math.log10(4096 / 10))
    assert psnr(t, t, 1.0) == math.inf


def test_ct_metrics_agree_with_skimage():
    rng = np.random.default_rng(0)
    target = rng.uniform(-1000, 1500, (48, 40)).astype(np.float32)
    pred = target + rng.normal(0, 30, target.shape).astype(np.float32)
    m = image_metrics(pred, target, task=TASKS["ct"])
    assert set(m) == set(METRIC_COLUMNS)
    t64, p64 = target.astype(np.float64), pred.astype(np.float64)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(t64, p64, data_range=4096.0))
    assert m["ssim"] == pytest.approx(_ssim(p64, t64, 4096.0))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((p64 - t64) ** 2)))
    lo, hi = CT_DISPLAY_WINDOW
    pw, tw = np.clip(p64, lo, hi), np.clip(t64, lo, hi)
    assert m["psnr_window"] == pytest.approx(peak_signal_noise_ratio(tw, pw, data_range=hi - lo))
    assert m["ssim_window"] == pytest.approx(_ssim(pw, tw, hi - lo))
    # the display window ignores the air/bone noise outside it, so its RMSE is smaller
    assert m["rmse_window"] < m["rmse"]
    p8 = np.clip(np.rint((p64 + 1024) / 4096 * 255), 0, 255).astype(np.uint8)
    t8 = np.clip(np.rint((t64 + 1024) / 4096 * 255), 0, 255).astype(np.uint8)
    assert m["psnr_y8"] == pytest.approx(peak_signal_noise_ratio(t8, p8))
    assert m["ssim_y8"] == pytest.approx(_ssim(p8.astype(float), t8.astype(float), 255.0))


def test_pet_metrics_use_the_target_range():
    target = np.zeros((32, 32))
    target[8:24, 8:24] = 10.0
    pred = target + 0.5
    m = image_metrics(pred, target, task=TASKS["pet"])
    assert m["rmse"] == pytest.approx(0.5)
    assert m["psnr"] == pytest.approx(20 * math.log10(10 / 0.5))
    assert math.isnan(m["psnr_window"])


def test_rgb_metrics_and_paper_y_channel_agree_with_skimage():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    pred = np.clip(target.astype(int) + rng.integers(-9, 10, target.shape), 0, 255).astype(np.uint8)
    task = TASKS["sr-x2"]
    m = image_metrics(pred, target, task=task)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(target, pred))
    assert m["ssim"] == pytest.approx(
        _ssim(pred.astype(float), target.astype(float), 255.0, channel_axis=-1))
    # skimage's rgb2ycbcr Y is the same BT.601 luma (16..235) on uint8 input
    assert np.allclose(rgb_to_y(target), np.rint(rgb2ycbcr(target)[..., 0]))
    ty, py = rgb_to_y(target)[2:-2, 2:-2], rgb_to_y(pred)[2:-2, 2:-2]
    assert m["psnr_y8"] == pytest.approx(peak_signal_noise_ratio(ty, py, data_range=255))
    assert set(definitions(task)) <= set(METRIC_COLUMNS)


def test_summarize_mean_std_and_t_interval():
    v = [30.0, 31.0, 33.0, 29.5]
    s = summarize(v)
    half = stats.t.ppf(0.975, 3) * np.std(v, ddof=1) / 2
    assert s["n"] == 4 and s["mean"] == pytest.approx(np.mean(v))
    assert s["std"] == pytest.approx(np.std(v, ddof=1))
    assert s["ci95_low"] == pytest.approx(np.mean(v) - half)
    assert s["ci95_high"] == pytest.approx(np.mean(v) + half)
    one = summarize([1.0, math.inf])  # inf (identical images) is left out of the mean
    assert one["n"] == 1 and one["mean"] == 1.0 and math.isnan(one["std"])


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        image_metrics(np.zeros((8, 8)), np.zeros((8, 9)), task=TASKS["ct"])


def test_overshoot_measures_halos_next_to_edges_only():
    from ratcli.training.metrics import overshoot_at_edges

    target = np.full((32, 32, 3), 60, np.uint8)
    target[:, 16:] = 200  # one vertical edge
    assert overshoot_at_edges(target, target) == 0.0
    halo = target.astype(np.int16)
    halo[:, 16] += 40  # bright halo on the bright side, dark rim on the dark side
    halo[:, 15] -= 40
    halo = np.clip(halo, 0, 255).astype(np.uint8)
    ringing = overshoot_at_edges(halo, target)
    assert ringing > 5.0
    far = target.astype(np.int16)
    far[:, 2] += 40  # the same error far from any edge is not ringing
    assert overshoot_at_edges(np.clip(far, 0, 255).astype(np.uint8), target) == 0.0


def test_overshoot_splits_into_ringing_and_edge_smear():
    from ratcli.training.metrics import overshoot_at_edges, overshoot_split

    target = np.full((32, 32, 3), 60, np.uint8)
    target[:, 16:] = 200  # one vertical edge between columns 15 and 16
    halo = target.astype(np.int16)
    halo[:, 16] += 40  # past the range on the pixel's own side: ringing only
    halo[:, 15] -= 40
    halo = np.clip(halo, 0, 255).astype(np.uint8)
    ringing, smear = overshoot_split(halo, target)
    assert ringing > 5.0 and smear == 0.0
    assert ringing + smear == pytest.approx(overshoot_at_edges(halo, target))
    # the bright side spilled two pixels into the dark one: past the dark pixels'
    # range on the bright side of it, an edge smeared across
    smeared = target.copy()
    smeared[:, 13:16] = 200
    ringing, smear = overshoot_split(smeared, target)
    assert ringing == 0.0 and smear > 5.0
    assert ringing + smear == pytest.approx(overshoot_at_edges(smeared, target))
    m = image_metrics(halo, target, task=TASKS["sr-x2"])
    assert m["overshoot"] == pytest.approx(m["ringing"] + m["edge_smear"])
