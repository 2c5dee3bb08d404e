"""Region boundaries drawn over the image, for looking at a region map."""

from __future__ import annotations

import numpy as np

from ratcli.regions.base import to_uint8

__all__ = ["overlay", "overlay_montage"]

BOUNDARY_RGB = (255, 32, 32)
TINT = 0.25  # weight of each region's colour in the blend
# Slices smaller than this (shorter side, px) are enlarged by a whole factor (nearest) so
# that a 128-px slice's regions and boundaries can be seen; boundaries stay 1 px wide.
MIN_OVERLAY_PX = 512


def overlay(slice2d: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W) greyscale or (H, W, 3) uint8 image + (H, W) labels -> (H, W, 3) uint8.

    Each region is tinted with its own colour (a fixed pseudo-random colour per label)
    and region boundaries are drawn in red, one pixel wide.
    """
    from skimage.segmentation import find_boundaries

    u8 = to_uint8(slice2d)
    rgb = u8 if u8.ndim == 3 else np.repeat(u8[..., None], 3, axis=-1)
    if rgb.shape[:2] != labels.shape:
        raise ValueError(f"labels {labels.shape} do not match the image {rgb.shape[:2]}")
    out = (1.0 - TINT) * rgb + TINT * _label_colours(labels)
    out[find_boundaries(labels, mode="inner")] = BOUNDARY_RGB
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def overlay_montage(volume: np.ndarray, labels: np.ndarray, *, max_slices: int = 9) -> np.ndarray:
    """Overlays of up to `max_slices` evenly spaced slices side by side.

    volume: (Z, H, W) or (Z, H, W, 3); labels: (Z, H, W). Returns (f * H, k * f * W + 2 *
    (k - 1), 3) uint8, slices side by side with 2-pixel black gaps, each enlarged by the
    whole factor f = ceil(MIN_OVERLAY_PX / min(H, W)) (1 for slices that size or larger).
    """
    z, h, w = labels.shape
    f = max(1, -(-MIN_OVERLAY_PX // min(h, w)))
    picks = np.unique(np.linspace(0, z - 1, min(z, max_slices)).round().astype(int))
    tiles = [overlay(_enlarge(volume[i], f), _enlarge(labels[i], f)) for i in picks]
    gap = np.zeros((tiles[0].shape[0], 2, 3), dtype=np.uint8)
    parts = [p for t in tiles for p in (t, gap)][:-1]
    return np.concatenate(parts, axis=1)


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) float colours; the same label always gets the same
    colour (a hash of its value), so overlays of related slices are comparable."""
    values = labels.astype(np.uint64)
    h = (values * np.uint64(2654435761)) & np.uint64(0xFFFFFF)  # Knuth multiplicative hash
    return np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (16, 8, 0)],
                    axis=-1).astype(np.float64)


def _enlarge(a: np.ndarray, f: int) -> np.ndarray:
    """(H, W[, C]) -> (f*H, f*W[, C]), each pixel repeated f x f times."""
    return a if f == 1 else np.repeat(np.repeat(a, f, axis=0), f, axis=1)
