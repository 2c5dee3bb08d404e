"""Best-of-grid ("oracle") baselines (issue 22 item 5): tv-best / nlm-best choose per
image the grid strength with the best PSNR against the target, gauss-best one Gaussian
FWHM in mm per volume."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ratcli.errors import UsageError
from ratcli.phantoms import ct_phantom, pet_phantom
from ratcli.tasks import get_task
from ratcli.training.baselines import baselines_for, bm3d_available, run_baseline
from ratcli.training.degrade import LowCountPET
from ratcli.training.metrics import psnr
from ratcli.training.oracle import BM3D_GRID, FWHM_GRID_MM, GRIDS, run_best


def _mse(out: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.mean((out.astype(np.float64) - target) ** 2, axis=(1, 2))


@pytest.mark.parametrize("name", ["tv-best", "nlm-best"])
def test_grid_best_beats_every_grid_setting_and_weighs_more_noise_harder(name):
    task = get_task("ct")
    clean = ct_phantom(48, 2, seed=3)
    rng = np.random.default_rng(0)
    chosen = {}
    for noise in (15.0, 120.0):  # HU, white
        low = (clean + rng.normal(0, noise, clean.shape)).astype(np.float32)
        best = run_best(name, low, task=task, target=clean)
        err = _mse(best.output, clean)
        grid = [_mse(run_baseline(name.removesuffix("-best"), low, task=task, target=clean,
                                  strength=m), clean) for m in GRIDS[name]]
        # as good as every grid setting, image by image, and equal to the best of them
        assert np.all(err <= np.min(grid, axis=0) * (1 + 1e-6))
        np.testing.assert_allclose(err, np.min(grid, axis=0), rtol=1e-6)
        assert np.all(err < _mse(low, clean))
        sigma = np.std(low - clean, axis=(1, 2))  # strengths are multiples of it
        chosen[noise] = np.array(best.values) * sigma
        assert len(best.settings) == 2 and best.settings[0].endswith("x sigma")
    assert np.all(chosen[120.0] > 2 * chosen[15.0])


def _pet_volume(dose: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    clean = pet_phantom(size=64, slices=2, seed=seed) * 1000.0  # Bq/ml
    rng = np.random.default_rng(seed + 1)
    return np.stack([LowCountPET(dose=dose)(s, rng) for s in clean]), clean


def _mean_psnr(volume: np.ndarray, target: np.ndarray) -> float:
    task = get_task("pet")
    return float(np.mean([psnr(o.astype(np.float64), t, task.data_range(t))
                          for o, t in zip(volume, target, strict=True)]))


def test_gauss_best_fwhm_grows_with_noise_and_is_one_per_volume():
    task = get_task("pet")
    fwhm = {}
    for dose in (0.5, 0.02):
        low, clean = _pet_volume(dose)
        best = run_best("gauss-best", low, task=task, target=clean, spacing=(2.0, 2.0, 2.0))
        assert len(set(best.values)) == 1 and best.settings[0].startswith("fwhm=")
        fwhm[dose] = best.values[0]
        assert best.output.min() >= 0 and best.at_edge == 0
        # the chosen FWHM has the best mean PSNR over the volume's images of the whole grid
        score = _mean_psnr(best.output, clean)
        for f in FWHM_GRID_MM:  # 2 mm pixels: sigma = FWHM / 2.3548 / 2 px, in-plane only
            other = gaussian_filter(low.astype(np.float64), (0, f / 4.7096, f / 4.7096),
                                    mode="nearest")
            assert score >= _mean_psnr(other, clean) - 1e-3, f  # output is float32
    assert fwhm[0.02] >= 2 * fwhm[0.5] > 0


def test_gauss_best_fwhm_is_in_mm_of_the_image_spacing():
    """The same pixels at twice the voxel size need twice the FWHM in mm (the grid steps
    by 2^(1/4), so exactly four steps up)."""
    task = get_task("pet")
    low, clean = _pet_volume(0.1)
    small = run_best("gauss-best", low, task=task, target=clean, spacing=(2.0, 2.0, 2.0))
    large = run_best("gauss-best", low, task=task, target=clean, spacing=(4.0, 4.0, 4.0))
    assert large.values[0] == pytest.approx(2 * small.values[0])
    np.testing.assert_allclose(large.output, small.output, rtol=1e-6)


def test_gauss_best_can_choose_no_filter_and_grid_baselines_need_the_target():
    task = get_task("ct")
    clean = ct_phantom(48, 1, seed=0)
    low = (clean + np.random.default_rng(0).normal(0, 5, clean.shape)).astype(np.float32)
    # 5 HU noise next to 1000 HU edges: any blur costs more than it gains
    best = run_best("gauss-best", low, task=task, target=clean, spacing=(0.7, 0.7, 2.5))
    assert best.values == [FWHM_GRID_MM[0]] == [0.0] and best.at_edge == 0
    np.testing.assert_array_equal(best.output, low)
    with pytest.raises(UsageError, match="target"):
        run_best("tv-best", low, task=task, target=None)
    with pytest.raises(ValueError, match="run_best"):
        run_baseline("tv-best", low, task=task, target=clean)


def test_bm3d_best_is_at_least_bm3d_with_the_true_sigma(monkeypatch):
    pytest.importorskip("bm3d")
    from ratcli.training import baselines

    runs = {}  # strength multiple -> BM3D's output (no second run: ~1.4 s per call here)

    def recording(x, sigma, mult):
        runs[mult] = baselines._bm3d(x, sigma, mult)
        return runs[mult]

    monkeypatch.setitem(baselines._DENOISERS, "bm3d", recording)
    task = get_task("ct")
    clean = ct_phantom(32, 1, seed=1)
    low = (clean + np.random.default_rng(2).normal(0, 60, clean.shape)).astype(np.float32)
    best = run_best("bm3d-best", low, task=task, target=clean)
    assert sorted(runs) == sorted(BM3D_GRID) and 1.0 in runs  # the true sigma is in it
    params = task.norm_params(low)
    errors = {m: _mse(task.denormalize(out[None].astype(np.float32), params), clean)[0]
              for m, out in runs.items()}
    assert _mse(best.output, clean)[0] == pytest.approx(min(errors.values()), rel=1e-6)
    assert best.settings == [f"sigma_psd={min(errors, key=errors.get):.3g}x sigma"]


def test_bm3d_best_runs_only_when_named():
    task = get_task("ct")
    default = baselines_for(task)
    assert {"tv-best", "nlm-best", "gauss-best"} <= set(default)
    assert "bm3d-best" not in default
    assert baselines_for(task, ["bm3d-best"]) == ["bm3d-best"] or not bm3d_available()
