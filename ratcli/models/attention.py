"""Region-restricted and window multi-head self-attention.

R-MSA lets each token attend only to the tokens that share its region label. Instead of
an (L, L) additive mask, the tokens of a forward pass are grouped by (image, label) once,
into a `RegionPlan` that every RAT layer of that forward reuses:

- regions larger than `big` tokens: one SDPA call each on a contiguous, unpadded slice
  of the grouped tokens (padding a large region would cost quadratically more);
- the smaller regions of all images: packed into power-of-two buckets, at most
  log2(big) + 1 SDPA calls, padded keys masked out.

Compute is the sum of squared region sizes and memory never grows with L^2. Building the
plan reads the region sizes back to the host once per forward; the per-layer path
(`RegionPlan.group`, `RegionPlan.attend`) has no host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["RegionPlan", "region_attention", "window_attention", "batch_region_ids"]


@dataclass(frozen=True)
class RegionPlan:
    """How the n = B * L tokens of one forward pass are grouped into regions.

    n: number of tokens. order: (n,) int64, the token at each grouped position (tokens
    sorted by image, then label, then position), or None when that is the identity.
    spans: (start, length) in grouped order of every region longer than `big` tokens.
    buckets: one (index, key_mask) per power-of-two size: index (G, size) int64 grouped
    positions of G regions, pads repeating the region's first token; key_mask (G, 1, 1,
    size) bool, or None when no region of the bucket is padded. unpack: (n,) int64, the
    row of the packed attention output (spans in order, then each bucket's G*size rows)
    that holds each token, or None when the packed output is already in token order.
    """

    n: int
    order: torch.Tensor | None
    spans: tuple[tuple[int, int], ...]
    buckets: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]
    unpack: torch.Tensor | None

    @classmethod
    def build(cls, labels: torch.Tensor, big: int = 64) -> RegionPlan:
        """labels: (B, L) integer, any values (negative, non-contiguous); equal labels in
        different images are different regions. big: regions longer than this run alone."""
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
        starts_t = torch.nonzero(new).flatten()
        identity = torch.equal(order, torch.arange(n, device=device))
        starts = starts_t.cpu().numpy()  # the one read-back of the forward pass
        counts = np.diff(np.append(starts, n))

        packed_row = np.empty(n, dtype=np.int64)  # grouped position -> packed output row
        is_big = counts > big
        in_big = np.repeat(is_big, counts)
        n_big = int(in_big.sum())
        packed_row[in_big] = np.arange(n_big)
        spans = tuple(zip(starts[is_big].tolist(), counts[is_big].tolist(), strict=True))
        buckets = []
        offset = n_big
        small = ~is_big
        power = np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64)
        for p in np.unique(power[small]).tolist():
            sel = small & (power == p)
            size = 1 << p
            g_start, g_count = starts[sel], counts[sel]
            ar = np.arange(size)
            valid = ar[None, :] < g_count[:, None]  # (G, size)
            index = g_start[:, None] + np.where(valid, ar[None, :], 0)
            rows = offset + np.arange(index.size).reshape(index.shape)
            packed_row[index[valid]] = rows[valid]
            offset += index.size
            mask = None if valid.all() else torch.from_numpy(valid[:, None, None, :]).to(device)
            buckets.append((torch.from_numpy(index).to(device), mask))
        unpack = None
        if not (identity and offset == n and np.array_equal(packed_row, np.arange(n))):
            rows_t = torch.from_numpy(packed_row).to(device)
            unpack = torch.empty_like(rows_t).index_put_((order,), rows_t)
        return cls(n, None if identity else order, spans, tuple(buckets), unpack)

    def group(self, t: torch.Tensor) -> torch.Tensor:
        """(n, ...) in token order -> (n, ...) in grouped order."""
        return t if self.order is None else t.index_select(0, self.order)

    def attend(self, qkv: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """qkv: (n, 3, heads, D) in grouped order -> (n, heads, D) in token order.

        scale: logit scale (default D**-0.5; pass the true head_dim**-0.5 when D is
        zero-padded)."""
        if qkv.shape[0] != self.n or qkv.shape[1] != 3:
            raise ValueError(f"qkv must have shape ({self.n}, 3, heads, D), got {tuple(qkv.shape)}")
        parts = []
        for s, m in self.spans:
            # (m, 3, heads, D) -> three (1, heads, m, D)
            q, k, v = qkv[s : s + m].permute(1, 2, 0, 3)[:, None]
            o = F.scaled_dot_product_attention(q, k, v, scale=scale)
            parts.append(o[0].transpose(0, 1))  # (m, heads, D)
        for index, mask in self.buckets:
            G, size = index.shape
            g = qkv.index_select(0, index.flatten())  # (G*size, 3, heads, D)
            # (G*size, 3, heads, D) -> three (G, heads, size, D)
            q, k, v = g.view(G, size, *qkv.shape[1:]).permute(2, 0, 3, 1, 4)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
            parts.append(o.transpose(1, 2).reshape(G * size, *qkv.shape[2:]))
        packed = parts[0] if len(parts) == 1 else torch.cat(parts)
        return packed if self.unpack is None else packed.index_select(0, self.unpack)


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
