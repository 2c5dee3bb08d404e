"""Degradation simulators are physically sane (issue 5, acceptance 1)."""

from __future__ import annotations

import numpy as np
import pytest

from ratcli.errors import UsageError
from ratcli.io.image import Image
from ratcli.tasks import TASKS
from ratcli.training.degrade import (
    BicubicDown,
    LowCountPET,
    LowDoseCT,
    make_degradation,
)


def _water_cylinder(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(n, n) HU: water (0) disc in air (-1000), and the mask of its inner region."""
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2)
    hu = np.where(r < 0.45 * n, 0.0, -1000.0).astype(np.float32)
    return hu, r < 0.3 * n


def test_ct_noise_grows_as_inverse_sqrt_dose_and_mean_hu_is_kept():
    hu, water = _water_cylinder(64)
    stds = {}
    for dose in (1.0, 0.25, 1 / 16):
        sim = LowDoseCT(dose=dose, photons=2e5, pixel_mm=5.0, views=180)
        diffs = [sim(hu, np.random.default_rng(s)) - hu for s in range(4)]
        d = np.stack(diffs)[:, water]
        assert abs(d.mean()) < 5.0, f"dose {dose}: mean HU shifted by {d.mean():.2f}"
        stds[dose] = d.std()
    assert stds[1.0] > 3.0  # noise is really there
    # quarter dose doubles the noise, 1/16 quadruples it (10 % tolerance)
    assert stds[0.25] / stds[1.0] == pytest.approx(2.0, rel=0.1)
    assert stds[1 / 16] / stds[1.0] == pytest.approx(4.0, rel=0.1)


def test_ct_is_deterministic_per_rng_and_keeps_shape_of_non_square_slices():
    hu = np.zeros((40, 56), dtype=np.float32)
    sim = LowDoseCT(dose=0.25, views=90, pixel_mm=2.0)
    a = sim(hu, np.random.default_rng(1))
    b = sim(hu, np.random.default_rng(1))
    c = sim(hu, np.random.default_rng(2))
    assert a.shape == hu.shape and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_ct_electronic_noise_adds_noise():
    hu, water = _water_cylinder(48)
    base = LowDoseCT(dose=0.05, photons=1e4, pixel_mm=5.0, views=90)
    noisy = LowDoseCT(dose=0.05, photons=1e4, pixel_mm=5.0, views=90, electronic_noise=20.0)
    s0 = (base(hu, np.random.default_rng(0)) - hu)[water].std()
    s1 = (noisy(hu, np.random.default_rng(0)) - hu)[water].std()
    assert s1 > 1.05 * s0


def test_pet_thinning_keeps_expected_count_ratio_and_mean():
    activity = np.full((64, 64), 4.0, dtype=np.float32)
    activity[20:40, 20:40] = 12.0
    sim = LowCountPET(dose=0.25, counts=50.0)
    k = sim.counts_per_unit(activity)
    full_counts = k * activity.sum()
    rng = np.random.default_rng(0)
    lows = np.stack([sim(activity, rng) for _ in range(20)])
    low_counts = lows * sim.dose * k  # back to integer event counts
    assert np.allclose(low_counts, np.rint(low_counts), atol=1e-3)
    ratio = low_counts.sum(axis=(1, 2)).mean() / full_counts
    assert ratio == pytest.approx(0.25, rel=0.01)
    assert lows.mean() == pytest.approx(activity.mean(), rel=0.01)  # rescaled to full dose
    # relative noise of Poisson(dose * k * a) / (dose * k) is 1 / sqrt(dose * k * a)
    rel = lows[:, 0:16, 0:16].std() / 4.0
    assert rel == pytest.approx(1 / np.sqrt(0.25 * k * 4.0), rel=0.1)


def test_pet_lower_dose_is_noisier_and_empty_image_stays_empty():
    activity = np.full((32, 32), 2.0, dtype=np.float32)
    rng = np.random.default_rng(0)
    s4 = LowCountPET(dose=0.25)(activity, rng).std()
    s12 = LowCountPET(dose=1 / 12)(activity, rng).std()
    assert s12 / s4 == pytest.approx(np.sqrt(3), rel=0.15)
    zero = np.zeros((8, 8), dtype=np.float32)
    assert np.array_equal(LowCountPET()(zero, rng), zero)


@pytest.mark.parametrize("scale", [2, 4])
def test_sr_downsampling_of_constant_is_constant(scale):
    img = np.full((32, 48, 3), (200, 37, 128), dtype=np.uint8)
    low = BicubicDown(scale=scale)(img, np.random.default_rng(0))
    assert low.shape == (32 // scale, 48 // scale, 3) and low.dtype == np.uint8
    assert np.array_equal(low, np.broadcast_to(img[:1, :1], low.shape))
    blurred = BicubicDown(scale=scale, blur_sigma=1.5)(img, np.random.default_rng(0))
    assert np.array_equal(blurred, low)


def test_sr_downsampling_is_antialiased_and_options_change_output():
    # a 1-pixel checkerboard is pure aliasing: anti-aliased downsampling gives its mean
    yy, xx = np.mgrid[:32, :32]
    board = np.where((yy + xx) % 2, 255, 0).astype(np.uint8)[..., None].repeat(3, -1)
    low = BicubicDown(scale=2)(board, np.random.default_rng(0)).astype(float)
    assert abs(low[2:-2, 2:-2].mean() - 127.5) < 2 and low[2:-2, 2:-2].std() < 2
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.float32), (32, 1))
    smooth = np.rint(smooth).astype(np.uint8)[..., None].repeat(3, -1)
    plain = BicubicDown(scale=2)(smooth, np.random.default_rng(0))
    noisy = BicubicDown(scale=2, noise_sigma=5)(smooth, np.random.default_rng(0))
    jpeg = BicubicDown(scale=2, jpeg_quality=10)(smooth, np.random.default_rng(0))
    assert 2 < np.abs(noisy.astype(float) - plain).mean() < 8
    assert not np.array_equal(jpeg, plain)


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError, match="dose"):
        LowDoseCT(dose=0.0)
    with pytest.raises(UsageError, match="dose"):
        LowCountPET(dose=1.5)
    with pytest.raises(UsageError, match="scale"):
        BicubicDown(scale=3)
    with pytest.raises(ValueError, match="multiple"):
        BicubicDown(scale=4)(np.zeros((10, 12, 3), np.uint8), np.random.default_rng(0))


def test_make_degradation_follows_the_task_table():
    assert isinstance(make_degradation(TASKS["ct"], dose=0.5), LowDoseCT)
    assert isinstance(make_degradation(TASKS["pet"]), LowCountPET)
    sr = make_degradation(TASKS["sr-x2"])
    assert isinstance(sr, BicubicDown) and sr.scale == 2
    assert make_degradation(TASKS["ct"], dose=0.5).describe()["dose"] == 0.5


def test_ct_pixel_size_comes_from_the_image_unless_set():
    img = Image(np.zeros((1, 8, 8), np.float32), spacing=(2.5, 2.5, 1.0))
    assert LowDoseCT().for_image(img).pixel_mm == 2.5
    assert LowDoseCT(pixel_mm=1.0).for_image(img).pixel_mm == 1.0
    assert LowCountPET().for_image(img) == LowCountPET()
