"""Quantitative PET checks of a restored volume against its target: what a PET reader
relies on besides PSNR.

- `min`: the smallest output value (activity is never negative);
- `total_change_pct`: change of the summed activity, 100 * (sum(pred) / sum(target) - 1);
- hot spots: lesion-sized uptake found in the target (see `find_hot_spots`); for each,
  the mean and the max inside its background-corrected 50 % isocontour (SUVmean/SUVmax-like) in the
  output against the target, and its contrast over the body background;
- `spot_mean_change_pct` (mean over spots), `spot_mean_worst_pct` (largest |change|),
  `spots_within_10pct` (fraction of spots whose mean changed by at most 10 %),
  `contrast_change_pct` (mean change of spot-to-background contrast).

    volume_metrics(pred, target)   # pred, target: (Z, Y, X) activity, same unit
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["HotSpot", "find_hot_spots", "volume_metrics", "VOLUME_COLUMNS"]

VOLUME_COLUMNS: tuple[str, ...] = (
    "min", "total_change_pct", "spots", "spot_mean_change_pct", "spot_mean_worst_pct",
    "spot_max_change_pct", "spots_within_10pct", "contrast_change_pct",
)

# A hot spot peaks at >= HOT_FACTOR x the body background and its isocontour region
# fits in a box of +-MAX_RADIUS voxels (larger: an organ such as bladder, brain, heart).
HOT_FACTOR = 3.0
MAX_RADIUS = 6
MIN_VOXELS = 2
BODY_FRACTION = 0.05  # body = voxels above 5 % of the target's 99.9th percentile


@dataclass(frozen=True)
class HotSpot:
    """peak: (z, y, x) voxel; mask: boolean (Z, Y, X) isocontour region; voxels: its size."""

    peak: tuple[int, int, int]
    mask: np.ndarray
    voxels: int


def find_hot_spots(target: np.ndarray) -> tuple[list[HotSpot], float]:
    """Lesion-sized hot spots of a (Z, Y, X) activity volume and the body background.

    Candidates are local maxima (3x3x3) above HOT_FACTOR x the median body activity; each
    spot is the connected region above background + 50 % of (peak - background) around
    it, kept when it has at least MIN_VOXELS voxels and stays inside a +-MAX_RADIUS box
    (so whole organs are left out).
    A peak that lies in an earlier (hotter) spot's region is not a new spot.
    """
    from scipy import ndimage

    t = np.asarray(target, dtype=np.float64)
    top = float(np.percentile(t, 99.9)) if t.size else 0.0
    body = t > BODY_FRACTION * top
    if top <= 0 or not body.any():
        return [], math.nan
    background = float(np.median(t[body]))
    peaks = (t == ndimage.maximum_filter(t, size=3)) & (t > HOT_FACTOR * background)
    taken = np.zeros(t.shape, dtype=bool)
    spots: list[HotSpot] = []
    coords = np.nonzero(peaks)
    for flat in np.argsort(t[peaks])[::-1]:
        z, y, x = (int(c[flat]) for c in coords)
        if taken[z, y, x]:
            continue
        box = tuple(slice(max(c - MAX_RADIUS - 1, 0), c + MAX_RADIUS + 2) for c in (z, y, x))
        # 50 % isocontour above the background (the usual background-corrected A50)
        local = t[box] >= background + 0.5 * (t[z, y, x] - background)
        labels, _ = ndimage.label(local)
        region = labels == labels[z - box[0].start, y - box[1].start, x - box[2].start]
        if _touches_border(region, box, t.shape) or region.sum() < MIN_VOXELS:
            continue
        mask = np.zeros(t.shape, dtype=bool)
        mask[box] = region
        taken |= mask
        spots.append(HotSpot((z, y, x), mask, int(region.sum())))
    return spots, background


def volume_metrics(pred: np.ndarray, target: np.ndarray,
                   spots: tuple[list[HotSpot], float] | None = None) -> dict[str, float]:
    """The VOLUME_COLUMNS of one restored PET volume (see the module docstring); `spots`
    may be passed in (from `find_hot_spots(target)`) to share them across methods."""
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} differ in shape")
    total_t = float(t.sum())
    out = dict.fromkeys(VOLUME_COLUMNS, math.nan)
    out["min"] = float(p.min())
    out["total_change_pct"] = 100.0 * (float(p.sum()) / total_t - 1.0) if total_t else math.nan
    found, background = spots if spots is not None else find_hot_spots(t)
    out["spots"] = float(len(found))
    if not found:
        return out
    # background of the output, measured where the target's is (median over its body)
    pb = float(np.median(p[t > BODY_FRACTION * float(np.percentile(t, 99.9))]))
    mean_change, max_change, contrast_change = [], [], []
    for s in found:
        tm, pm = float(t[s.mask].mean()), float(p[s.mask].mean())
        mean_change.append(100.0 * (pm / tm - 1.0))
        max_change.append(100.0 * (float(p[s.mask].max()) / float(t[s.mask].max()) - 1.0))
        if pb > 0:
            contrast_change.append(100.0 * ((pm / pb) / (tm / background) - 1.0))
    m = np.asarray(mean_change)
    out.update(
        spot_mean_change_pct=float(m.mean()),
        spot_mean_worst_pct=float(m[np.argmax(np.abs(m))]),
        spot_max_change_pct=float(np.mean(max_change)),
        spots_within_10pct=float(np.mean(np.abs(m) <= 10.0)),
        contrast_change_pct=float(np.mean(contrast_change)) if contrast_change else math.nan,
    )
    return out


def _touches_border(region: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> bool:
    """True when the region reaches a face of its box that is not the volume's edge."""
    for axis, sl in enumerate(box):
        lo_face = np.take(region, 0, axis=axis)
        hi_face = np.take(region, -1, axis=axis)
        if sl.start > 0 and lo_face.any():
            return True
        if (sl.stop < shape[axis]) and hi_face.any():
            return True
    return False
