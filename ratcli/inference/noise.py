"""Noise level of a slice, the conditioning of noise-aware models (RATConfig.noise_ref).

A denoiser working on 64-pixel patches sees poorly how noisy the whole slice is, and how
much of a patch's grain to remove depends on it: a real full-dose CT has 5-25 HU of grain
of its own, which the output should keep. Like FFDNet, a noise-aware RAT gets the
slice's noise level as an extra input. `estimate_noise` computes it from the input slice
alone, the same way in training (ratcli.training.patches) and at inference
(ratcli.inference.restorer) for a "blind" model; a "pair" model is trained with the std
of the noise added to the target (`pair_noise`), and at inference is told the noise
(`rat denoise --noise`) or gets the estimate, which reads the added noise's std to about
+-15 % when the added noise dominates (see estimate_noise) and the target's own grain
too when it does not.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["NOISE_SOURCES", "estimate_noise", "pair_noise", "robust_std"]

NOISE_SOURCES = ("blind", "pair")  # what a model's noise channel is trained with
_MAD = 1.4826  # MAD -> std for Gaussian data
BOX = 7  # edge of the mean whose residual estimate_noise reads


def estimate_noise(x: np.ndarray) -> float:
    """Noise std of one slice (H, W), in its own units, from the slice alone.

    The residual of a BOX x BOX mean is noise plus edges. Pixels whose 3x3 neighbourhood
    of that residual is constant (padding, clipped air) are left out, and of the rest the
    half with the largest local gradient (edges); the robust std of the residual that
    remains, scaled to white noise's std (the residual keeps 1 - 1/BOX^2 of its
    variance), is the estimate. 0.0 when fewer than 64 pixels are left.

    Why a 7-pixel box: CT noise is correlated, more so with smooth kernels, and a 3x3
    residual sees only its finest part. On the wide CT training slices whose added noise
    is at least twice the target's own grain, this estimate over the added noise's std
    is, median (10-90 %): ramp 1.04 (0.95-1.46), Shepp-Logan 1.00 (0.83-1.06), Hann 0.97
    (0.88-1.34); a 3x3 box gave 0.98, 0.88 and 0.54."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or min(x.shape) < 2 * BOX:
        raise ValueError(f"need a 2D slice of at least {2 * BOX}x{2 * BOX} pixels, "
                         f"got {x.shape}")
    smooth = ndimage.uniform_filter(x, BOX, mode="reflect")
    resid = x - smooth
    grad = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
    local = ndimage.uniform_filter(resid**2, 3)
    inner = (slice(BOX // 2, -(BOX // 2)),) * 2  # the border sees reflected pixels
    resid, grad, local = resid[inner], grad[inner], local[inner]
    keep = local > 0
    if keep.sum() < 64:
        return 0.0
    r = resid[keep][grad[keep] <= np.median(grad[keep])]
    return robust_std(r) / float(np.sqrt(1 - 1 / BOX**2))


def pair_noise(inp: np.ndarray, target: np.ndarray) -> float:
    """Std of the noise that makes `inp` from `target` (same shape): the robust std of
    their difference over the pixels where they differ (padding and clipped pixels that
    stayed equal are left out). 0.0 when fewer than 64 pixels differ. What a
    `noise_source = "pair"` model is trained with, and what `rat evaluate --noise pair`
    tells it: the added noise's std, as the classical baselines are told it."""
    d = (np.asarray(inp, np.float64) - np.asarray(target, np.float64)).ravel()
    d = d[d != 0]
    if d.size < 64:
        return 0.0
    return robust_std(d)


def robust_std(a: np.ndarray) -> float:
    """1.4826 x the median absolute deviation of `a` (in its own dtype): the std of
    Gaussian data, unmoved by a minority of outliers (edges, lesions)."""
    return _MAD * float(np.median(np.abs(a - np.median(a))))
