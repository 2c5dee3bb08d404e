"""Noise level of a slice, the conditioning of noise-aware models (RATConfig.noise_ref).

A denoiser working on 64-pixel patches sees poorly how noisy the whole slice is, and how
much of a patch's grain to remove depends on it: a real full-dose CT has 5-25 HU of grain
of its own, which the output should keep. Like FFDNet, a noise-aware RAT gets the
slice's noise level as an extra input. `estimate_noise` computes it from the input slice
alone, the same way in training (ratcli.training.patches) and at inference
(ratcli.inference.restorer), so its scale need not be exact: it reads a fine-scale
statistic, which sees about 0.5-1.0 of the std of correlated CT noise (less for smooth
kernels; measured on the wide CT training data, rat-ct card).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["estimate_noise", "pair_noise"]

_MAD = 1.4826  # MAD -> std for Gaussian data


def estimate_noise(x: np.ndarray) -> float:
    """Noise std of one slice (H, W), in its own units, from the slice alone.

    The residual of a 3x3 mean is noise plus edges. Pixels whose 3x3 neighbourhood is
    constant (padding, clipped air) are left out, and of the rest the half with the
    largest local gradient (edges); the robust std of the residual that remains, scaled
    to white noise's std (the residual keeps 8/9 of its variance), is the estimate.
    0.0 when fewer than 64 pixels are left."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or min(x.shape) < 8:
        raise ValueError(f"need a 2D slice of at least 8x8 pixels, got {x.shape}")
    smooth = ndimage.uniform_filter(x, 3, mode="reflect")
    resid = x - smooth
    grad = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))[1:-1, 1:-1]
    local = ndimage.uniform_filter(resid**2, 3)[1:-1, 1:-1]
    resid = resid[1:-1, 1:-1]  # the border rows see reflected pixels
    keep = local > 0
    if keep.sum() < 64:
        return 0.0
    r = resid[keep][grad[keep] <= np.median(grad[keep])]
    return float(_MAD * np.median(np.abs(r - np.median(r))) / np.sqrt(8 / 9))


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
    return float(_MAD * np.median(np.abs(d - np.median(d))))
