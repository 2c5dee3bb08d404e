"""How good a region map is, measured without labels: do its boundaries follow the
image's edges, and does it stay put between neighbouring slices.

    ratio = edge_alignment(view, labels)    # 1.0: boundaries fall on edges by chance
    ari = adjusted_rand(labels_z, labels_z1)  # 1.0: the same partition

Used by tests/test_regions_medsam.py and benchmarks/regions_medsam.py.
"""

from __future__ import annotations

import numpy as np

__all__ = ["edge_alignment", "adjusted_rand"]


def edge_alignment(view: np.ndarray, labels: np.ndarray, *, top: float = 0.1,
                   sigma: float = 1.5, tolerance: int = 2) -> float:
    """How much more often region boundaries lie on strong edges than pixels at random.

    view: (H, W) or (H, W, 3) image; labels: (H, W) ints. Strong edges: the `top`
    fraction of pixels with the largest gradient magnitude (Sobel of the grey view
    smoothed by `sigma` px), widened by `tolerance` px (a map drawn at a quarter of the
    resolution places its edges to 2 px). Returns P(edge | boundary pixel) / P(edge);
    1.0 is chance, 1 / P(edge) the most possible. NaN when the map has no boundary.
    """
    from skimage.segmentation import find_boundaries

    edges = _strong_edges(view, top=top, sigma=sigma, tolerance=tolerance)
    boundary = find_boundaries(labels, mode="inner")
    if not boundary.any():
        return float("nan")
    return float(edges[boundary].mean() / max(edges.mean(), 1e-12))


def _strong_edges(view: np.ndarray, *, top: float = 0.1, sigma: float = 1.5,
                 tolerance: int = 2) -> np.ndarray:
    """(H, W) bool: the `top` fraction of strongest gradients, dilated by `tolerance`."""
    from scipy import ndimage

    g = view.astype(np.float32)
    if g.ndim == 3:
        g = g.mean(-1)
    g = ndimage.gaussian_filter(g, sigma)
    mag = np.hypot(ndimage.sobel(g, 0), ndimage.sobel(g, 1))
    edges = mag >= np.quantile(mag, 1.0 - top)
    if tolerance:
        edges = ndimage.binary_dilation(edges, iterations=tolerance)
    return edges


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two label maps of one shape (1: identical partitions,
    about 0: as alike as random maps with these region sizes)."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    _, ia = np.unique(a.ravel(), return_inverse=True)
    _, ib = np.unique(b.ravel(), return_inverse=True)
    table = np.bincount(ia * (ib.max() + 1) + ib).astype(np.float64)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    n = float(a.size)
    both = pairs(table)
    ra = pairs(np.bincount(ia).astype(np.float64))
    rb = pairs(np.bincount(ib).astype(np.float64))
    expected = ra * rb / (n * (n - 1) / 2)
    best = (ra + rb) / 2
    return 1.0 if best == expected else float((both - expected) / (best - expected))
