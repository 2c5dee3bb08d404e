"""Region-restricted and window multi-head self-attention.

`region_attention` is the memory-efficient form of R-MSA: each token attends only to the
tokens that share its region label. Instead of an (L, L) additive mask it sorts tokens
by label and runs `scaled_dot_product_attention` per region, so compute is the sum of
squared region sizes and memory never grows with L^2:

- regions larger than `big` tokens: one SDPA call each on a contiguous slice (no mask);
- smaller regions: packed into buckets of power-of-two length (at most log2(big)+1 calls),
  padded keys masked out per region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["region_attention", "window_attention", "batch_region_ids"]


def region_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, labels: torch.Tensor, big: int = 64
) -> torch.Tensor:
    """Attention restricted to tokens with equal labels.

    q, k, v: (B, heads, L, head_dim); labels: (B, L) integer, any values (negative,
    non-contiguous). Returns (B, heads, L, head_dim), logits scaled by head_dim**-0.5.
    """
    B, Hh, L, D = q.shape
    if labels.shape != (B, L):
        raise ValueError(f"labels must have shape {(B, L)}, got {tuple(labels.shape)}")
    group = batch_region_ids(labels)
    order = torch.argsort(group.flatten(), stable=True)  # token positions, grouped
    counts = torch.unique_consecutive(group.flatten()[order], return_counts=True)[1]
    starts = torch.cumsum(counts, 0) - counts

    # (B, heads, L, D) -> (B*L, heads, D), then grouped order
    def tokens(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(B * L, Hh, D)[order]

    qs, ks, vs = tokens(q), tokens(k), tokens(v)
    out = torch.empty_like(qs)
    counts_list = counts.tolist()
    starts_list = starts.tolist()

    # Large regions: contiguous slices, plain SDPA.
    for s, n in zip(starts_list, counts_list, strict=True):
        if n > big:
            sl = slice(s, s + n)
            # (n, heads, D) -> (1, heads, n, D)
            o = F.scaled_dot_product_attention(*(t[sl].transpose(0, 1)[None] for t in (qs, ks, vs)))
            out[sl] = o[0].transpose(0, 1)

    # Small regions: one padded batch per power-of-two bucket.
    small = counts <= big
    if bool(small.any()):
        bucket = torch.ceil(torch.log2(counts.clamp(min=1).double())).long()
        for p in torch.unique(bucket[small]).tolist():
            sel = small & (bucket == p)
            size = 1 << p
            g_start, g_count = starts[sel], counts[sel]
            ar = torch.arange(size, device=q.device)
            valid = ar[None, :] < g_count[:, None]  # (G, size)
            idx = g_start[:, None] + torch.where(valid, ar[None, :], 0)  # pads repeat token 0
            # (G, size, heads, D) -> (G, heads, size, D)
            qg, kg, vg = (t[idx].transpose(1, 2) for t in (qs, ks, vs))
            mask = valid[:, None, None, :]  # keys only; every row has >= 1 valid key
            o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask)
            out[idx[valid]] = o.transpose(1, 2)[valid]

    # grouped order -> original order, (B*L, heads, D) -> (B, heads, L, D)
    result = torch.empty_like(out)
    result[order] = out
    return result.reshape(B, L, Hh, D).transpose(1, 2)


def batch_region_ids(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) integer labels -> (B, L) int64 ids in [0, B*L), equal exactly where two
    tokens share an image and a label: the rank of the label within its image plus b*L."""
    B, L = labels.shape
    ranks = torch.stack([torch.unique(row, return_inverse=True)[1] for row in labels])
    return ranks + torch.arange(B, device=labels.device)[:, None] * L


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain attention within windows: q, k, v (B*nW, heads, ws*ws, head_dim)."""
    return F.scaled_dot_product_attention(q, k, v)
