"""Region-restricted and window multi-head self-attention.

R-MSA lets each token attend only to the tokens that share its region label. Instead of
an (L, L) additive mask, the tokens of a forward pass are grouped by (image, label) once,
into a `RegionPlan` that every RAT layer of that forward reuses. The plan packs regions
into SDPA calls of G regions padded to a common size S (pads masked as keys):

- regions larger than `big` tokens are never padded: equal-sized ones share a call;
- the smaller regions, sorted by size, are cut into runs by a small dynamic programme
  that minimises a cost model of the CPU kernel (a fixed cost per call plus G * S^2
  scores and G * S rows), so few calls are made and little padding is computed.

Compute is about the sum of squared region sizes and memory never grows with L^2.
Building the plan reads the region sizes back to the host once per forward; the
per-layer path (`RegionPlan.group`, `RegionPlan.attend`) has no host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["RegionPlan", "region_attention", "window_attention", "batch_region_ids"]

# Cost model of one SDPA call, in units of one attention score (all heads): a call costs
# about as much as _CALL_COST scores, a query row as much as _ROW_COST scores. A call's
# true cost is more than its kernel time (its slice of qkv, its mask, its part of the
# concatenation): whole forwards with real region maps (classical partitioner) ran
# fastest at 40000 (rat-sr-x4 on a CMU-1 crop 15-18 s vs 28-32 s at the earlier 1600,
# from kernel timings alone; rat-ct on a 512^2 slice 18-20 s vs 27-33 s; one thread on
# the loaded 2-core CPU, outputs equal to 1e-4): fewer, more padded calls.
_CALL_COST = 40000.0
_ROW_COST = 20.0


@dataclass(frozen=True)
class RegionPlan:
    """How the n = B * L tokens of one forward pass are packed into SDPA calls.

    n: number of tokens. gather: (P,) int64, the token at each of the P packed rows
    (regions call by call, each padded by repeating its first token), or None when that
    is the identity (P == n). calls: (start row, G, S, key_mask) of every call, covering
    rows start .. start + G*S; key_mask (G, 1, 1, S) bool, None when nothing is padded.
    unpack: (n,) int64, the packed row that holds each token, or None for the identity.
    """

    n: int
    gather: torch.Tensor | None
    calls: tuple[tuple[int, int, int, torch.Tensor | None], ...]
    unpack: torch.Tensor | None

    @classmethod
    def build(cls, labels: torch.Tensor, big: int = 64) -> RegionPlan:
        """labels: (B, L) integer, any values (negative, non-contiguous); equal labels in
        different images are different regions. big: regions longer than this are never
        padded."""
        B, L = labels.shape
        n, device = B * L, labels.device
        flat = labels.reshape(n)
        image = torch.arange(n, device=device) // L
        by_label = torch.argsort(flat, stable=True)
        order = by_label[torch.argsort(image[by_label], stable=True)]  # image, label, position
        sorted_labels, sorted_image = flat[order], image[order]
        new = torch.ones(n, dtype=torch.bool, device=device)
        new[1:] = ((sorted_labels[1:] != sorted_labels[:-1])
                   | (sorted_image[1:] != sorted_image[:-1]))
        starts = torch.nonzero(new).flatten().cpu().numpy()  # the one read-back of the forward
        counts = np.diff(np.append(starts, n))

        groups = _equal_size_groups(counts, counts > big) + _padded_runs(counts, counts <= big)
        calls, rows = [], []  # rows: the grouped position held by each packed row
        packed_row = np.empty(n, dtype=np.int64)  # grouped position -> its packed row
        start = 0
        for regions in groups:
            size = int(counts[regions].max())
            ar = np.arange(size)
            valid = ar < counts[regions, None]  # (G, size)
            grouped = starts[regions, None] + np.where(valid, ar, 0)  # pads: first token
            packed_row[grouped[valid]] = start + np.flatnonzero(valid)
            rows.append(grouped.reshape(-1))
            mask = None if valid.all() else torch.from_numpy(valid[:, None, None, :]).to(device)
            calls.append((start, len(regions), size, mask))
            start += valid.size
        gather = order.index_select(0, torch.from_numpy(np.concatenate(rows)).to(device))
        if start == n and torch.equal(gather, torch.arange(n, device=device)):
            return cls(n, None, tuple(calls), None)
        unpack = torch.empty(n, dtype=torch.long, device=device)
        unpack.index_put_((order,), torch.from_numpy(packed_row).to(device))
        return cls(n, gather, tuple(calls), unpack)

    @property
    def rows(self) -> int:
        """Number of packed rows P (n plus the pads)."""
        return self.n if self.gather is None else self.gather.numel()

    def group(self, t: torch.Tensor) -> torch.Tensor:
        """(n, ...) in token order -> (P, ...) in packed order."""
        return t if self.gather is None else t.index_select(0, self.gather)

    def attend(self, qkv: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """qkv: (P, 3, heads, D) in packed order -> (n, heads, D) in token order.

        scale: logit scale (default D**-0.5; pass the true head_dim**-0.5 when D is
        zero-padded)."""
        if qkv.shape[0] != self.rows or qkv.shape[1] != 3:
            raise ValueError(f"qkv must have shape ({self.rows}, 3, heads, D), "
                             f"got {tuple(qkv.shape)}")
        parts = []
        for start, G, size, mask in self.calls:
            # (G*size, 3, heads, D) -> three (G, heads, size, D)
            q, k, v = qkv[start : start + G * size].view(G, size, *qkv.shape[1:]).permute(
                2, 0, 3, 1, 4)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
            parts.append(o.transpose(1, 2).reshape(G * size, *qkv.shape[2:]))
        packed = parts[0] if len(parts) == 1 else torch.cat(parts)
        return packed if self.unpack is None else packed.index_select(0, self.unpack)


def _equal_size_groups(counts: np.ndarray, selected: np.ndarray) -> list[np.ndarray]:
    """Indices of the selected regions, grouped by equal size (calls without padding)."""
    idx = np.flatnonzero(selected)
    return [idx[counts[idx] == c] for c in np.unique(counts[idx])]


def _padded_runs(counts: np.ndarray, selected: np.ndarray) -> list[np.ndarray]:
    """Indices of the selected regions cut into calls of consecutive sizes: the cheapest
    cut under the cost model (_CALL_COST per call, G * (S^2 + _ROW_COST * S) per call
    of G regions padded to S), by dynamic programming over the distinct sizes."""
    idx = np.flatnonzero(selected)
    if not idx.size:
        return []
    idx = idx[np.argsort(counts[idx], kind="stable")]
    sizes, first = np.unique(counts[idx], return_index=True)
    last = np.append(first[1:], idx.size)  # regions of sizes[k] are idx[first[k]:last[k]]
    K = sizes.size
    best, cut = np.zeros(K + 1), np.zeros(K + 1, dtype=np.int64)
    for j in range(1, K + 1):  # sizes[i:j] in one call, padded to sizes[j-1]
        S = float(sizes[j - 1])
        cost = best[:j] + _CALL_COST + (last[j - 1] - first[:j]) * (S * S + _ROW_COST * S)
        cut[j] = np.argmin(cost)
        best[j] = cost[cut[j]]
    runs, j = [], K
    while j:
        runs.append(idx[first[cut[j]] : last[j - 1]])
        j = cut[j]
    return runs[::-1]


def region_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, labels: torch.Tensor, big: int = 64
) -> torch.Tensor:
    """Attention restricted to tokens with equal labels (one-off form of `RegionPlan`).

    q, k, v: (B, heads, L, head_dim); labels: (B, L) integer, any values (negative,
    non-contiguous). Returns (B, heads, L, head_dim), logits scaled by head_dim**-0.5.
    """
    B, Hh, L, D = q.shape
    if labels.shape != (B, L):
        raise ValueError(f"labels must have shape {(B, L)}, got {tuple(labels.shape)}")
    plan = RegionPlan.build(labels, big=big)
    # three (B, heads, L, D) -> (B, L, 3, heads, D) -> (B*L, 3, heads, D)
    qkv = torch.stack((q, k, v), dim=1).permute(0, 3, 1, 2, 4).reshape(B * L, 3, Hh, D)
    out = plan.attend(plan.group(qkv))  # (B*L, heads, D)
    return out.reshape(B, L, Hh, D).transpose(1, 2)


def batch_region_ids(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) integer labels -> (B, L) int64 ids in [0, B*L), equal exactly where two
    tokens share an image and a label: the rank of the label within its image plus b*L."""
    B, L = labels.shape
    ranks = torch.stack([torch.unique(row, return_inverse=True)[1] for row in labels])
    return ranks + torch.arange(B, device=labels.device)[:, None] * L


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain attention within windows: q, k, v (B*nW, heads, ws*ws, head_dim)."""
    return F.scaled_dot_product_attention(q, k, v)
