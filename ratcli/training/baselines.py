"""Classical baselines for `rat evaluate`: the input itself, non-local means, total
variation, BM3D (when the `bm3d` package is installed) and bicubic upsampling for SR;
the best-of-grid ("oracle") baselines GRID_BASELINES, which pick their setting with
the target, run through oracle.py's `run_best` instead of `run_baseline`.

Denoisers work on the task-normalised slice. Given the target (`rat evaluate` always has
it), they get the true noise level, sigma = std(input - target) of that slice, the
strongest setting a classical method can have: BM3D sigma_psd = sigma, NLM h = 0.8 sigma
(scikit-image's recommendation for fast mode), TV weight = sigma. Without a target, sigma
is estimated from the input alone (`skimage.restoration.estimate_sigma`, wavelet MAD);
FBP noise is spatially correlated, so that estimate runs low, and the strengths are
larger multiples of it (NLM h = 1.0 sigma, TV weight = 2 sigma, BM3D sigma_psd =
2 sigma), chosen once on a synthetic *training* phantom (128 px, quarter dose). No
strength was ever tuned on evaluation data.

PET noise is Poisson-like (its variance grows with the activity), so a single sigma fits
no part of the image; for tasks with non-negative activity the denoisers run on the
Anscombe transform z = 2 sqrt(x / g + 3/8) (g: activity per count, var(x) = g * E[x]),
where the noise is ~unit and even, and come back through the closed-form exact unbiased
inverse (Makitalo & Foi, 2011): the textbook strongest classical setting for counts.
Given the target, g = sum((x - t)^2) / sum(t) per slice and sigma = std(z(x) - z(t))
over the voxels with activity (t > 0: an empty background has no noise to measure);
without it, g is the median variance/mean ratio of the input's 3x3 blocks and sigma 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ratcli.errors import UsageError
from ratcli.tasks import TaskSpec

__all__ = ["BASELINES", "GRID_BASELINES", "baselines_for", "run_baseline"]

# Strength multiples of sigma (see the module docstring): (true sigma, estimated sigma).
NLM_H = (0.8, 1.0)
TV_WEIGHT = (1.0, 2.0)
BM3D_SIGMA = (1.0, 2.0)
STRENGTHS = {"nlm": NLM_H, "tv": TV_WEIGHT, "bm3d": BM3D_SIGMA}

# Best-of-grid baselines (oracle.py); they need the target to choose their setting.
GRID_BASELINES = ("tv-best", "nlm-best", "gauss-best", "bm3d-best")
# Run only when named: bm3d-best is four BM3D runs, about 2 minutes per 512^2 slice.
OPT_IN_BASELINES = ("bm3d-best",)
DENOISE_BASELINES = ("input", "nlm", "tv", "bm3d", *GRID_BASELINES)
SR_BASELINES = ("bicubic",)
BASELINES = DENOISE_BASELINES + SR_BASELINES


def bm3d_available() -> bool:
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return False
    return True


def baselines_for(task: TaskSpec, names: list[str] | None = None) -> list[str]:
    """The baselines to run for `task`: `names` checked, or every one that applies.

    The default leaves out OPT_IN_BASELINES, and BM3D when the package is missing;
    asking for BM3D by name then raises UsageError naming the extra to install.
    """
    valid = SR_BASELINES if task.kind == "sr" else DENOISE_BASELINES
    if names is None:
        return [n for n in valid if n not in OPT_IN_BASELINES
                and (n != "bm3d" or bm3d_available())]
    for n in names:
        if n not in valid:
            raise UsageError(f"--baselines {n}: task {task.name} offers {', '.join(valid)}")
        if n.startswith("bm3d") and not bm3d_available():
            raise UsageError(f"--baselines {n}: the bm3d package is not installed "
                             "(pip install 'ratcli[train]')")
    return list(dict.fromkeys(names))


def run_baseline(name: str, volume: np.ndarray, *, task: TaskSpec,
                 target: np.ndarray | None = None,
                 strength: float | None = None) -> np.ndarray:
    """Apply baseline `name` to an input volume, slice by slice.

    volume: (Z, h, w) float32 physical units, or (Z, h, w, 3) uint8 for SR.
    target: the matching full-quality volume, if known: denoisers then get each slice's
    true noise sigma instead of an estimate.
    strength: nlm/tv/bm3d only: the multiple of sigma to use instead of STRENGTHS
    (oracle.py's grids).
    Returns the output volume in the same units: (Z, h, w) for denoising,
    (Z, h*s, w*s, 3) uint8 for SR.
    """
    if name == "bicubic":
        return _bicubic(volume, task.scale)
    if name == "input":
        return volume.astype(np.float32)
    if name in GRID_BASELINES:  # oracle.py imports this module, so not the reverse
        raise ValueError(f"{name}: run it with ratcli.training.oracle.run_best")
    params = task.norm_params(volume)
    norm = task.normalize(volume, params)
    fn = _DENOISERS[name]
    if task.nonnegative:
        # Anscombe-domain noise is unit whether or not the target is known: true-sigma multiple
        mult = STRENGTHS[name][0] if strength is None else strength
        clean = None if target is None else task.normalize(target, params)
        out = np.stack([_poisson_denoise(fn, s, None if clean is None else clean[i], mult)
                        for i, s in enumerate(norm)])
        return task.denormalize(out.astype(np.float32), params)
    if target is None:
        sig = [(_estimated_sigma(s), STRENGTHS[name][1]) for s in norm]
    else:
        clean = task.normalize(target, params)
        sig = [(max(float(np.std(s - c)), 1e-6), STRENGTHS[name][0])
               for s, c in zip(norm, clean, strict=True)]
    out = np.stack([fn(s.astype(np.float64), sigma, mult if strength is None else strength)
                    for s, (sigma, mult) in zip(norm, sig, strict=True)])
    return task.denormalize(out.astype(np.float32), params)


def _poisson_denoise(fn: Callable[[np.ndarray, float, float], np.ndarray], x: np.ndarray,
                     clean: np.ndarray | None, mult: float = 1.0) -> np.ndarray:
    """Denoise one count-like slice (activity >= 0) in the Anscombe domain; `fn` gets
    the Anscombe-domain sigma and the strength multiple `mult`."""
    x = np.clip(x.astype(np.float64), 0.0, None)
    if clean is not None:
        t = np.clip(clean.astype(np.float64), 0.0, None)
        g = float(np.sum((x - t) ** 2) / max(np.sum(t), 1e-12))
    else:  # var/mean of 3x3 blocks; the median resists edges (chi2_8 median: 7.34)
        H, W = x.shape[0] // 3 * 3, x.shape[1] // 3 * 3
        blocks = x[:H, :W].reshape(H // 3, 3, W // 3, 3).transpose(0, 2, 1, 3).reshape(-1, 9)
        m, v = blocks.mean(1), blocks.var(1, ddof=1)
        g = float(np.median(v[m > 0] / m[m > 0]) * 8 / 7.34) if np.any(m > 0) else 0.0
    if g <= 0:
        return x
    z = 2.0 * np.sqrt(x / g + 3 / 8)
    if clean is not None:
        # the noise where there is activity: an empty background (t = 0, mostly x = 0)
        # has almost none, and counting it put sigma at 0.65 instead of 1.0 on a brain
        # PET (40 % of the slice active), which left BM3D 5 dB under-smoothed
        active = t > 0 if np.any(t > 0) else np.ones_like(t, bool)
        sigma = max(float(np.std((z - 2.0 * np.sqrt(t / g + 3 / 8))[active])), 1e-6)
    else:
        sigma = 1.0  # the Anscombe domain's noise is unit by construction
    # below z(0) = 2 sqrt(3/8) the inverse is 0 counts (the closed form diverges there)
    d = np.maximum(fn(z, sigma, mult), 2.0 * np.sqrt(3 / 8))
    r = np.sqrt(1.5)
    counts = 0.25 * d**2 + 0.25 * r / d - 11 / 8 / d**2 + 0.625 * r / d**3 - 0.125
    return np.clip(counts, 0.0, None) * g


def _estimated_sigma(slice2d: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    return max(float(estimate_sigma(slice2d)), 1e-6)


# Each denoiser: (slice, sigma, mult) -> slice, with strength mult * sigma.
def _nlm(x: np.ndarray, sigma: float, mult: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(x, h=mult * sigma, sigma=sigma, fast_mode=True,
                            patch_size=5, patch_distance=6)


def _tv(x: np.ndarray, sigma: float, mult: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(x, weight=mult * sigma)


def _bm3d(x: np.ndarray, sigma: float, mult: float) -> np.ndarray:
    import bm3d  # optional: the `train` extra

    return np.asarray(bm3d.bm3d(x, sigma_psd=mult * sigma))


_DENOISERS: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "nlm": _nlm, "tv": _tv, "bm3d": _bm3d,
}


def _bicubic(volume: np.ndarray, scale: int) -> np.ndarray:
    """(Z, h, w, 3) uint8 -> (Z, h*s, w*s, 3) uint8, bicubic (a = -0.75), edges clamped."""
    x = torch.from_numpy(volume.astype(np.float32)).permute(0, 3, 1, 2)  # (Z, 3, h, w)
    y = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
