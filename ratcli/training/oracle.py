"""Best-of-grid ("oracle") classical baselines for `rat evaluate`: each classical filter
at the setting that is best *for this image against its target*.

THESE USE THE TARGET. Each one runs its filter at every setting of a small fixed grid
and keeps, per image, the output with the highest PSNR against the full-quality target
(the lowest mean squared error in physical units, which is the same thing: the PSNR's
data range does not depend on the output). No user can do this on a real scan, so these
numbers are an *upper bound* on what the classical method can reach, the strongest
setting it could have; a model ahead of them is ahead of any tuning of that filter.

- `tv-best`: TV (Chambolle), weight = m x sigma (sigma: the slice's true noise std, as
  for `tv`) with m in TV_GRID (0.25 .. 4, steps of sqrt 2), chosen per image.
- `nlm-best`: non-local means (fast mode, 5x5 patches, 13x13 search), h = m x sigma with
  m in NLM_GRID (0.35 .. 2.8, steps of sqrt 2), chosen per image.
- `gauss-best`: the clinical PET post-filter, a 2D (in-plane) Gaussian of FWHM f mm
  with f in FWHM_GRID_MM (0 = no filter, then 1 .. 22.6 mm in steps of 2^(1/4)),
  converted to pixels with the image's own x/y spacing; ONE FWHM PER VOLUME (a scan
  is reconstructed with one post-filter), the one with the highest mean PSNR over the
  volume's images. It filters the activity directly (it is linear, so it keeps the
  mean); any denoising task can run it.
- `bm3d-best` (only when named: four BM3D runs): sigma_psd = m x sigma with m in
  BM3D_GRID (0.71, 1, 1.41, 2), chosen per image. FBP noise is correlated and uneven, so
  the true sigma is not BM3D's best setting on CT: on a 256^2 crop of a simulated
  quarter-dose body CT, 1.41 x sigma gave 43.44 dB against 42.73 at 1 x (a chest: 47.48
  vs 47.52).

PET runs tv/nlm in the Anscombe domain exactly as baselines.py does, and the choice is
made after the inverse, in activity. Cost per 512 x 512 simulated quarter-dose CT slice
on this project's 2-core CPU, one thread, with training running beside it (load ~6):
tv-best 4-9 s (9 TV runs; larger weights take more iterations), nlm-best about 3 s
(7 runs), gauss-best about 0.4 s (20 filters); BM3D with the true sigma, one run, 32 s
under the same load, bm3d-best four times that. 10 slices: about 1.5 minutes for
tv-best, 5 for BM3D, 20 for bm3d-best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ratcli.errors import UsageError
from ratcli.tasks import TaskSpec
from ratcli.training.baselines import run_baseline

__all__ = ["GRIDS", "GridChoice", "run_best", "TV_GRID", "NLM_GRID", "FWHM_GRID_MM",
           "BM3D_GRID"]

# Multiples of the true sigma; the optimum sat at 0.7-1.4 x sigma on CT phantoms at
# noise 4-92 HU, so the grid spans four times that either side.
TV_GRID: tuple[float, ...] = tuple(2.0 ** (k / 2) for k in range(-4, 5))
NLM_GRID: tuple[float, ...] = tuple(2.0 ** (k / 2) for k in range(-3, 4))
BM3D_GRID: tuple[float, ...] = tuple(2.0 ** (k / 2) for k in range(-1, 3))
# Clinical PET post-filters are 2-10 mm FWHM; 0 (no filter) keeps gauss-best at least as
# good as the input where any blur costs more at edges than it removes in noise (CT).
FWHM_GRID_MM: tuple[float, ...] = (0.0, *(2.0 ** (k / 4) for k in range(0, 19)))
GRIDS: dict[str, tuple[float, ...]] = {"tv-best": TV_GRID, "nlm-best": NLM_GRID,
                                       "gauss-best": FWHM_GRID_MM, "bm3d-best": BM3D_GRID}
# What a grid value means, for the report's `setting` column.
_LABELS = {"tv-best": "weight={:.3g}x sigma", "nlm-best": "h={:.3g}x sigma",
           "gauss-best": "fwhm={:.3g} mm", "bm3d-best": "sigma_psd={:.3g}x sigma"}
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass
class GridChoice:
    """output: the best-of-grid volume; values: the chosen grid value per image;
    settings: the same as text (`weight=1.41x sigma`, `fwhm=4.76 mm`); at_edge: images
    whose choice is the grid's largest value or its smallest non-zero one (the best may
    lie outside the grid)."""

    output: np.ndarray
    values: list[float]
    settings: list[str]
    at_edge: int


def run_best(name: str, volume: np.ndarray, *, task: TaskSpec, target: np.ndarray | None,
             spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> GridChoice:
    """Run grid baseline `name` (a key of GRIDS) on `volume` (Z, h, w), choosing its
    setting with `target` (Z, h, w), both in physical units."""
    if target is None:
        raise UsageError(f"baseline {name} picks its setting with the target; it needs "
                         "paired or simulated data")
    grid = GRIDS[name]
    t = target.astype(np.float64)
    if name == "gauss-best":
        return _gauss_best(volume, t, spacing, grid)
    base = name.removesuffix("-best")
    best = np.empty(volume.shape, np.float32)
    best_err = np.full(volume.shape[0], np.inf)
    pick = np.zeros(volume.shape[0], int)
    for i, m in enumerate(grid):
        out = run_baseline(base, volume, task=task, target=target, strength=m)
        err = _mse(out, t)
        better = err < best_err
        best[better], best_err[better], pick[better] = out[better], err[better], i
    return _choice(name, best, grid, pick)


def _gauss_best(volume: np.ndarray, t: np.ndarray, spacing: tuple[float, float, float],
                grid: tuple[float, ...]) -> GridChoice:
    """One in-plane Gaussian FWHM for the whole volume: the highest mean PSNR over its
    images, i.e. the lowest mean log MSE (each image's data range is fixed)."""
    from scipy.ndimage import gaussian_filter

    sx, sy = float(spacing[0]), float(spacing[1])
    x = volume.astype(np.float64)
    best, best_score, pick = x, np.inf, 0
    for i, fwhm in enumerate(grid):
        sigma_px = (0.0, fwhm / _FWHM_PER_SIGMA / sy, fwhm / _FWHM_PER_SIGMA / sx)
        out = gaussian_filter(x, sigma_px, mode="nearest")
        score = float(np.mean(np.log(np.maximum(_mse(out, t), 1e-30))))
        if score < best_score:
            best, best_score, pick = out, score, i
    return _choice("gauss-best", best.astype(np.float32), grid,
                   np.full(volume.shape[0], pick))


def _mse(out: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-image mean squared error, (Z,)."""
    return np.mean((out.astype(np.float64) - t) ** 2, axis=(1, 2))


def _choice(name: str, output: np.ndarray, grid: tuple[float, ...],
            pick: np.ndarray) -> GridChoice:
    values = [grid[i] for i in pick]
    edge = (pick == len(grid) - 1) | ((pick == 0) & (grid[0] > 0))  # 0 = off: no beyond
    return GridChoice(output, values, [_LABELS[name].format(v) for v in values],
                      int(np.sum(edge)))
