"""Output guards: a restored image checked against its own input, undoing the two
things a network must not do to it.

- `activity_guard` (PET): denoisers flatten small hot spots (lesion SUV drops, the
  known failure of PET denoising) and fill in cold ones. What the network removed,
  `input - output`, should be noise: zero-mean at every scale. Where its local mean is
  significant under the Poisson noise of the input, the network removed structure, and
  that part is put back.
- `range_guard` (SR): a super-resolved pixel may not leave the range of the input pixels
  around it; overshoot past it is ringing (bright halos, dark rims around nuclei).

Both work on whole images in the input's units, after the model; `apply_guard` picks
the task's guard. They are on by default (`Restorer(guard=False)`, `Session(raw=True)`
or `--raw` for the raw network output); weights/README.md gives the measured effect.
"""

from __future__ import annotations

import numpy as np

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


def activity_guard(low: np.ndarray, restored: np.ndarray, *, sigma: float = 1.0,
                   z: float = 3.0, fine_sigma: float = 0.0) -> np.ndarray:
    """Put back what the network removed where removing it was not denoising.

    low, restored: (Z, Y, X) activity (any unit, >= 0); filters run in 3D over voxels
    (2D when Z = 1). The residual d = low - restored is smoothed with a Gaussian of
    `sigma` voxels (m); under Poisson noise its variance is proportional to the
    activity smoothed by sigma / sqrt(2), which standardises m to a score whose noise
    scale is measured over the body (MAD), so the unknown counts per unit of activity
    drop out. Where |score| exceeds `z` (ramping to full weight at z + 1,
    then widened by one voxel), the residual (smoothed by `fine_sigma`; 0 = as is) is
    added back. The defaults were chosen on the training and validation lesions of the
    real PET (weights/README.md): flagged spots get the input's own unbiased activity.
    Returns float32 >= 0, same shape.
    """
    from scipy import ndimage

    # float32 throughout: whole-body volumes are large, and the test is a 3-sigma one
    x = np.asarray(low, dtype=np.float32)
    out = np.asarray(restored, dtype=np.float32)
    sig = (0.0 if out.shape[0] == 1 else sigma, sigma, sigma)
    d = x - out
    m = ndimage.gaussian_filter(d, sig)
    top = float(np.percentile(out, 99.9)) if out.size else 0.0
    body = out > _BODY * top
    if top <= 0 or not body.any():
        return restored.astype(np.float32)
    # Var(m) ~ sum(g^2) * (activity smoothed by sigma / sqrt(2)); constant factors
    # (sum(g^2), counts per unit) cancel in the MAD standardisation below. Outside the
    # body a few stray counts would look significant: the variance is floored there.
    var = ndimage.gaussian_filter(out, [s / np.sqrt(2) for s in sig])
    score = m / np.sqrt(np.maximum(var, _BODY * top))
    inside = score[body]
    spread = 1.4826 * float(np.median(np.abs(inside - np.median(inside))))
    if spread <= 0:
        return restored.astype(np.float32)
    weight = np.clip(np.abs(score) / spread - z, 0.0, 1.0)
    weight = ndimage.maximum_filter(weight, size=(1 if out.shape[0] == 1 else 3, 3, 3))
    fine = ndimage.gaussian_filter(d, [s * fine_sigma / sigma for s in sig]) if fine_sigma else d
    return np.maximum(out + weight * fine, 0.0).astype(np.float32, copy=False)


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

