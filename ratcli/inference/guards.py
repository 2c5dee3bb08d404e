"""Output guards: a restored image checked against its own input, undoing the two
things a network must not do to it.

- `activity_guard` (PET): denoisers flatten small hot spots (lesion SUV drops, the
  known failure of PET denoising) and fill in cold ones. What the network removed,
  `input - output`, should be noise: zero-mean at every scale. Where its local mean is
  significant under the Poisson noise of the input, the network removed structure, and
  that part is put back (as the input had it; around a hot organ median-filtered, so
  its noise does not come back as a speckled rim).
- `range_guard` (SR): a super-resolved pixel may not leave the range of the input pixels
  around it; overshoot past it is ringing (bright halos, dark rims around nuclei).

Both work on whole images in the input's units, after the model; `apply_guard` picks
the task's guard. They are on by default (`Restorer(guard=False)`, `Session(raw=True)`
or `--raw` for the raw network output); weights/README.md gives the measured effect.
"""

from __future__ import annotations

import numpy as np

from ratcli.inference.noise import robust_std

__all__ = ["apply_guard", "activity_guard", "range_guard", "GUARDS"]

GUARDS = ("activity", "range")
_BODY = 0.05  # PET body: above 5 % of the 99.9th percentile (as training.activity)


def apply_guard(kind: str, low: np.ndarray, restored: np.ndarray, scale: int = 1
                ) -> np.ndarray:
    """The guard named `kind` ("" = none) on a restored volume; see the functions."""
    if not kind:
        return restored
    if kind == "activity":
        return activity_guard(low, restored)
    if kind == "range":
        return range_guard(low, restored, scale)
    raise ValueError(f"unknown output guard {kind!r}; choose from {GUARDS}")


def activity_guard(low: np.ndarray, restored: np.ndarray, *,
                   sigmas: tuple[float, ...] = (1.0, 2.0), z: float = 3.0,
                   rim_voxels: int | None = 300) -> np.ndarray:
    """Put back what the network removed where removing it was not denoising.

    low, restored: (Z, Y, X) activity (any unit, >= 0); filters run in 3D over voxels
    (2D when Z = 1). The residual d = low - restored is tested at each scale in `sigmas`
    (Gaussian smoothing in voxels: 1 finds small lesions, 2 large ones the network
    lowered by a little over many voxels); where any scale's score exceeds `z`
    (`_significance`), d is added back: flagged spots get the input's own, unbiased
    activity. A cold flagged region of more than `rim_voxels` (activity the network
    spilled past the edge of a hot organ) is then median-filtered (`_calm_rims`), so the
    input's noise does not come back as a speckled rim; None turns that off. The
    settings were chosen on lesions inserted into the training and validation slabs of
    the real PET (weights/README.md). Returns float32 >= 0.
    """
    from scipy import ndimage

    # float32 throughout: whole-body volumes are large, and the test is a 3-sigma one
    x = np.asarray(low, dtype=np.float32)
    out = np.asarray(restored, dtype=np.float32)
    top = float(np.percentile(out, 99.9)) if out.size else 0.0
    body = out > _BODY * top
    d = x - out
    # a network that changed nothing removed nothing (only rounding, which the
    # MAD-standardised test below would take for signal)
    if top <= 0 or not body.any() or np.abs(d).max() <= 1e-4 * top:
        return restored.astype(np.float32)
    weight = np.zeros_like(d)
    for sigma in sigmas:
        np.maximum(weight, _significance(d, out, sigma, z, body, top), out=weight)
    weight = ndimage.maximum_filter(weight, size=(1 if out.shape[0] == 1 else 3, 3, 3))
    guarded = out + weight * d
    if rim_voxels is not None:
        _calm_rims(guarded, d, weight, rim_voxels)
    return np.maximum(guarded, 0.0).astype(np.float32, copy=False)


def _calm_rims(guarded: np.ndarray, d: np.ndarray, weight: np.ndarray, rim_voxels: int
               ) -> None:
    """Median-filter (3x3x3, in place) the guarded volume in the cold flagged regions of
    more than `rim_voxels`.

    Cold = d smoothed by 1 voxel is <= 0: the network put activity there that the input
    does not have, which next to a hot organ (the bladder) is its blurred edge. Putting
    d back there as is gives each voxel the input's own Poisson noise, at the noise level
    of the organ next door; a median of the guarded volume (not of d, whose median next
    to the organ takes in the organ's own loss) keeps the edge where the input has it
    and drops the speckle. Hot regions and small cold
    ones (lesions; a cold sphere of radius 3 voxels flags about 200) keep d as is: their
    unbiased mean matters more than their noise.
    """
    from scipy import ndimage

    flat = d.shape[0] == 1
    smooth = ndimage.gaussian_filter(d, (0.0 if flat else 1.0, 1.0, 1.0))
    cold, n = ndimage.label((weight > 0) & (smooth <= 0))
    if n == 0:
        return
    sizes = ndimage.sum_labels(cold > 0, cold, np.arange(1, n + 1))
    size = (1, 3, 3) if flat else (3, 3, 3)
    for label, box in enumerate(ndimage.find_objects(cold), start=1):
        if box is None or sizes[label - 1] <= rim_voxels:
            continue
        # the box grown by one voxel, so the median sees the rim's neighbours
        grown = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        part = guarded[grown]
        rim = cold[grown] == label
        part[rim] = ndimage.median_filter(part, size=size, mode="nearest")[rim]


def _significance(d: np.ndarray, out: np.ndarray, sigma: float, z: float,
                  body: np.ndarray, top: float) -> np.ndarray:
    """Weight in [0, 1] where the residual d, smoothed by `sigma` voxels (m), is more than
    `z` noise units from 0 (full weight at z + 1).

    Under Poisson noise Var(m) is proportional to the activity smoothed by
    sigma / sqrt(2); the constant factors (sum of g^2, counts per unit of activity)
    cancel in the standardisation by the MAD of the score over the body. Outside the
    body a few stray counts would look significant: the variance is floored there.
    """
    from scipy import ndimage

    sig = (0.0 if out.shape[0] == 1 else sigma, sigma, sigma)
    m = ndimage.gaussian_filter(d, sig)
    var = ndimage.gaussian_filter(out, [s / np.sqrt(2) for s in sig])
    score = m / np.sqrt(np.maximum(var, _BODY * top))
    spread = robust_std(score[body])
    if spread <= 0:
        return np.zeros_like(d)
    return np.clip(np.abs(score) / spread - z, 0.0, 1.0)


def range_guard(low: np.ndarray, restored: np.ndarray, scale: int) -> np.ndarray:
    """Clamp each SR output pixel into the range of the 3x3 input pixels around its
    source position: the min and max filters of the input, upsampled bilinearly
    (as the model upsamples its input).

    low: (Z, h, w, 3) uint8; restored: (Z, h*scale, w*scale, 3) uint8. Returns uint8.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(low)).permute(0, 3, 1, 2).float()
    hi = F.max_pool2d(x, 3, stride=1, padding=1)
    lo = -F.max_pool2d(-x, 3, stride=1, padding=1)
    hi, lo = (F.interpolate(t, scale_factor=scale, mode="bilinear", align_corners=False)
              for t in (hi, lo))
    out = torch.from_numpy(np.ascontiguousarray(restored)).permute(0, 3, 1, 2).float()
    out = torch.minimum(torch.maximum(out, lo), hi)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

