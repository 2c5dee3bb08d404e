"""Sliding-window tiles that always cover the whole image, and their blending weights.

A slice of H x W input pixels is cut into tiles of `tile` x `tile` whose neighbours share
at least `overlap` pixels. Tile starts are spread evenly, so tile sizes that do not divide
the image still cover every pixel, and the last tile ends exactly at the border.

Blending (per axis, separable): a pixel at distance d from a tile edge that lies *inside*
the image gets weight 0 for d < overlap/4, a raised-cosine ramp up to 1 at d = overlap/2,
and 1 beyond. Edges on the image border are not tapered. The weights of all tiles are
normalised to sum to 1 per pixel (a partition of unity). Because every pixel is at least
overlap/2 away from the inner edges of some tile, a model whose receptive-field radius is
at most overlap/4 gives *exactly* the whole-image result; for wider models (RAT's
attention is global per tile) the taper hides the seams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TileGrid", "tile_starts"]


@dataclass(frozen=True)
class TileGrid:
    """Tile layout of one 2D slice.

    height, width: slice size in input pixels; tile: tile edge (input pixels, already
    clipped to the slice); overlap: minimum shared pixels between neighbours (input
    pixels); scale: output pixels per input pixel (SR factor, 1 for denoising).
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    scale: int = 1

    @classmethod
    def plan(cls, height: int, width: int, *, tile: int, overlap: int, scale: int = 1) -> TileGrid:
        """Tiles of `tile` (clipped to the slice) with at least `overlap` shared pixels."""
        if tile < 1 or overlap < 0:
            raise ValueError(f"tile must be >= 1 and overlap >= 0, got {tile}, {overlap}")
        # Keep at least half of each tile new, or the tile count explodes.
        overlap = min(overlap, tile // 2)
        return cls(height, width, min(tile, height), min(tile, width), overlap, scale)

    @property
    def ys(self) -> list[int]:
        return tile_starts(self.height, self.tile_h, self.overlap)

    @property
    def xs(self) -> list[int]:
        return tile_starts(self.width, self.tile_w, self.overlap)

    @property
    def origins(self) -> list[tuple[int, int]]:
        """(y0, x0) of every tile in input pixels, row-major."""
        return [(y, x) for y in self.ys for x in self.xs]

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def weights(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per-tile 1D blending weights at output resolution, normalised across tiles.

        Returns (wy, wx): wy[i] is (tile_h * scale,) float32 for the i-th row of tiles,
        wx[j] is (tile_w * scale,) for the j-th column. The weight of tile (i, j) is
        outer(wy[i], wx[j]); over all tiles they sum to 1 at every output pixel.
        """
        s = self.scale
        wy = axis_weights(self.height * s, self.tile_h * s, [y * s for y in self.ys],
                          self.overlap * s)
        wx = axis_weights(self.width * s, self.tile_w * s, [x * s for x in self.xs],
                          self.overlap * s)
        return wy, wx


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread starts of the fewest tiles of size `tile` covering [0, length)
    with at least `overlap` shared pixels between neighbours; the last ends at `length`."""
    if tile >= length:
        return [0]
    step = tile - overlap
    n = math.ceil((length - overlap) / step)  # fewest tiles with steps <= tile - overlap
    n = max(n, 2)
    span = length - tile
    return [round(i * span / (n - 1)) for i in range(n)]


def axis_weights(length: int, tile: int, starts: list[int], overlap: int) -> list[np.ndarray]:
    """Normalised 1D weights (one (tile,) float32 array per start) along one axis."""
    margin = overlap // 4  # pixels next to an inner edge that never count
    ramp = max(overlap // 2 - margin, 0)  # raised-cosine rise after the margin
    raw = []
    for s in starts:
        idx = np.arange(tile, dtype=np.float64)
        inf = np.full(tile, np.inf)
        d_lo = idx if s > 0 else inf  # distance to the left/top edge, if it is inside
        d_hi = (tile - 1 - idx) if s + tile < length else inf
        raw.append(_taper(np.minimum(d_lo, d_hi), margin, ramp))
    total = np.zeros(length, dtype=np.float64)
    for s, w in zip(starts, raw, strict=True):
        total[s : s + tile] += w
    if not np.all(total > 0):  # cannot happen with tile_starts; guard the invariant
        raise AssertionError("tiles leave pixels with zero total weight")
    return [(w / total[s : s + tile]).astype(np.float32) for s, w in zip(starts, raw, strict=True)]


def _taper(d: np.ndarray, margin: int, ramp: int) -> np.ndarray:
    """0 for d < margin, raised cosine over `ramp` pixels, then 1 (d in pixels)."""
    if ramp == 0:
        return (d >= margin).astype(np.float64)
    t = np.clip((d - margin + 1) / (ramp + 1), 0.0, 1.0)
    return np.where(d < margin, 0.0, 0.5 - 0.5 * np.cos(np.pi * t))
