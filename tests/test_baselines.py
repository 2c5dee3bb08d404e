"""Classical baselines: the Anscombe path PET denoisers take (count noise)."""

from __future__ import annotations

import numpy as np
import pytest

from ratcli.phantoms import pet_phantom
from ratcli.tasks import get_task
from ratcli.training.baselines import _poisson_denoise, run_baseline
from ratcli.training.degrade import LowCountPET


def _mean_denoiser(z, sigma, which):  # a perfect denoiser of a flat image
    return np.full_like(z, z.mean())


@pytest.mark.parametrize("lam", [0.5, 2.0, 10.0, 100.0])
@pytest.mark.parametrize("with_target", [True, False])
def test_anscombe_inverse_is_unbiased_from_low_to_high_counts(lam, with_target):
    g = 0.01  # activity per count
    x = np.random.default_rng(0).poisson(lam, (300, 400)) * g
    target = np.full(x.shape, lam * g) if with_target else None
    out = _poisson_denoise(_mean_denoiser, x, target)
    assert out.mean() == pytest.approx(lam * g, rel=0.01)


def test_pet_baselines_are_nonnegative_and_beat_the_input():
    task = get_task("pet")
    clean = pet_phantom(size=64, slices=2, seed=0) * 1000.0  # Bq/ml
    rng = np.random.default_rng(1)
    low = np.stack([LowCountPET(dose=0.25)(s, rng) for s in clean])
    err_in = np.mean((low - clean) ** 2)
    for name in ("nlm", "tv"):
        for target in (clean, None):
            out = run_baseline(name, low, task=task, target=target)
            assert out.shape == low.shape and out.min() >= 0
            assert np.mean((out - clean) ** 2) < 0.7 * err_in, name


def test_anscombe_true_sigma_is_measured_where_there_is_activity():
    """An empty background (no counts, no noise) must not dilute the true sigma: a
    uniform disk on 70 % zeros has unit Anscombe noise inside, not sqrt(0.3)."""
    yy, xx = np.mgrid[:200, :200]
    t = np.where((yy - 100) ** 2 + (xx - 100) ** 2 < 62**2, 20.0, 0.0)  # 30 % active
    x = np.random.default_rng(0).poisson(t).astype(np.float64)
    seen = []

    def record(z, sigma, mult):
        seen.append(sigma)
        return z

    _poisson_denoise(record, x, t)
    assert seen[0] == pytest.approx(1.0, abs=0.05)
