"""The SAM-free partitioner: SLIC superpixels merged greedily on a region adjacency graph.

Deterministic (SLIC starts from a regular grid; merges are ordered by cost, then by
label) and fast: slices larger than `work_size` are partitioned on a block-mean
downsampled copy and the labels scaled back (nearest), so a 512x512 slice costs what a
256x256 one does. RAT reads the map at a quarter of the resolution (one label per 4x4
block), so region edges placed to 2 pixels are as fine as the model can use. Its
regions are connected areas of similar intensity or colour, about as coarse as SAM's
automatic masks: the body, each organ, the lungs, bone and the background on a CT slice;
tissue types and large nuclei clusters on an H&E tile.
"""

from __future__ import annotations

import heapq

import numpy as np

from ratcli.regions.base import Partitioner, to_uint8

__all__ = ["ClassicalPartitioner"]


class ClassicalPartitioner(Partitioner):
    """SLIC superpixels, then Ward-style merging of adjacent superpixels.

    n_segments: SLIC superpixels per slice (fixed count, so the granularity relative to
        the field of view does not depend on the pixel size).
    compactness: SLIC colour/space trade-off in units of the [0, 1] intensity (Lab/100).
    sigma: Gaussian pre-smoothing in pixels (low-dose noise must not make superpixels).
    threshold: stop merging when the cheapest merge costs more than this; the cost of
        merging regions a, b is |mean_a - mean_b|^2 * n_a n_b / (n_a + n_b) / N (the
        increase in within-region variance as a fraction of the N pixels).
    min_area: regions smaller than this fraction of the slice are merged whatever the cost.
    work_size: slices whose longer side exceeds this are block-mean downsampled by the
        smallest integer factor that brings it to at most `work_size` pixels (SLIC's
        sigma shrinks by the same factor); 0 partitions every slice at full size.
    """

    name = "classical"

    def __init__(
        self,
        *,
        n_segments: int = 300,
        compactness: float = 0.1,
        sigma: float = 1.0,
        threshold: float = 1e-5,
        min_area: float = 0.002,
        work_size: int = 256,
    ) -> None:
        if (n_segments < 1 or compactness <= 0 or sigma < 0 or threshold < 0 or min_area < 0
                or work_size < 0):
            raise ValueError("classical partitioner settings must be positive")
        self.n_segments = int(n_segments)
        self.compactness = float(compactness)
        self.sigma = float(sigma)
        self.threshold = float(threshold)
        self.min_area = float(min_area)
        self.work_size = int(work_size)

    @property
    def settings(self) -> dict:
        # work_size is part of the region cache key: it changes the maps of large slices
        return {"n_segments": self.n_segments, "compactness": self.compactness,
                "sigma": self.sigma, "threshold": self.threshold, "min_area": self.min_area,
                "work_size": self.work_size}

    def _partition(self, slice2d: np.ndarray) -> np.ndarray:
        from skimage.segmentation import slic

        u8 = to_uint8(slice2d)
        H, W = u8.shape[:2]
        f = -(-max(H, W) // self.work_size) if self.work_size else 1
        small = _block_mean(u8, f)  # (h, w[, 3]) float32 in uint8 units
        if small.ndim == 3:
            from skimage.color import rgb2lab

            features = (rgb2lab(small / 255.0) / 100.0).astype(np.float32)  # L [0, 1], a/b ~[-1, 1]
            image, channel_axis = features, -1
        else:
            features = (small / 255.0)[..., None]
            image, channel_axis = features[..., 0], None
        superpixels = slic(image, n_segments=self.n_segments, compactness=self.compactness,
                           sigma=self.sigma / f, channel_axis=channel_axis, start_label=0,
                           convert2lab=False)
        labels = merge_regions(superpixels, features, threshold=self.threshold,
                               min_area=self.min_area)
        # nearest-neighbour back to (H, W): keeps first-appearance numbering
        return labels[np.arange(H)[:, None] // f, np.arange(W)[None, :] // f]


def merge_regions(
    labels: np.ndarray, features: np.ndarray, *, threshold: float, min_area: float
) -> np.ndarray:
    """Greedy Ward merging of adjacent regions.

    labels: (H, W) int, 0..n-1 (every label present). features: (H, W, C) float.
    Returns (H, W) int32 labels 1..k, numbered in order of first appearance (row-major),
    so equal inputs give equal outputs.
    """
    n = int(labels.max()) + 1
    total = float(labels.size)
    flat = labels.ravel()
    count = np.bincount(flat, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=features[..., c].ravel(), minlength=n)
                     for c in range(features.shape[-1])], axis=1)
    mean = sums / np.maximum(count, 1.0)[:, None]
    neighbours = _adjacency(labels, n)
    parent = np.arange(n)
    version = [0] * n  # bumped on every merge, so stale heap entries are skipped

    def cost(i: int, j: int) -> float:
        d = mean[i] - mean[j]
        return float(d @ d) * count[i] * count[j] / (count[i] + count[j]) / total

    heap = [(cost(i, j), i, j, 0, 0) for i in range(n) for j in neighbours[i] if i < j]
    heapq.heapify(heap)
    while heap:
        c, i, j, vi, vj = heapq.heappop(heap)
        if parent[i] != i or parent[j] != j or vi != version[i] or vj != version[j]:
            continue
        if c > threshold and min(count[i], count[j]) >= min_area * total:
            continue  # too different; a later merge may still make one side small
        # fold j into i
        mean[i] = (mean[i] * count[i] + mean[j] * count[j]) / (count[i] + count[j])
        count[i] += count[j]
        parent[j] = i
        version[i] += 1
        for k in neighbours.pop(j):
            if k != i:
                neighbours[k].discard(j)
                neighbours[k].add(i)
                neighbours[i].add(k)
        neighbours[i].discard(j)
        for k in neighbours[i]:
            a, b = min(i, k), max(i, k)
            heapq.heappush(heap, (cost(a, b), a, b, version[a], version[b]))
    root = _roots(parent)
    _, first, inverse = np.unique(root[flat], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # rank regions by first pixel
    return (order[inverse] + 1).reshape(labels.shape).astype(np.int32)


def _block_mean(u8: np.ndarray, f: int) -> np.ndarray:
    """(H, W[, 3]) uint8 -> (ceil(H/f), ceil(W/f)[, 3]) float32 means of f x f blocks
    (edge blocks padded by repeating the last row/column)."""
    x = u8.astype(np.float32)
    if f == 1:
        return x
    H, W = x.shape[:2]
    h, w = -(-H // f), -(-W // f)
    pad = [(0, h * f - H), (0, w * f - W)] + [(0, 0)] * (x.ndim - 2)
    x = np.pad(x, pad, mode="edge")
    return x.reshape(h, f, w, f, *x.shape[2:]).mean(axis=(1, 3))


def _adjacency(labels: np.ndarray, n: int) -> dict[int, set[int]]:
    """4-connected neighbours of each label: {label: {labels touching it}}."""
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()]).astype(np.int64)
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()]).astype(np.int64)
    differ = a != b
    lo, hi = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
    pairs = np.unique(lo * n + hi)
    out: dict[int, set[int]] = {i: set() for i in range(n)}
    for i, j in zip((pairs // n).tolist(), (pairs % n).tolist(), strict=True):
        out[i].add(j)
        out[j].add(i)
    return out


def _roots(parent: np.ndarray) -> np.ndarray:
    """Follow parent links to the surviving label of every original label."""
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt
