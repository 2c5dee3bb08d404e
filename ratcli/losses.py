"""Training losses: L1 and the focal region loss of RAT.

Overshoot loss (against ringing): how far the prediction leaves the range of the target
in each pixel's 3x3 neighbourhood; halos and dark rims next to edges are exactly that.

Focal region loss: e = |pred - target| per pixel; for each region r of each image
w_r = mean(e over r) (no gradient), normalised by the batch maximum and clamped to
[0, 1]; loss = mean(e * (1 + beta * w)). Hard regions weigh more; beta = 0 gives L1.
"""

from __future__ import annotations

import torch

from ratcli.models.attention import batch_region_ids

__all__ = ["focal_region_loss", "region_weights", "l1_loss", "overshoot_loss"]


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean()


def region_weights(error: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Per-pixel weight w in [0, 1] from per-region mean error.

    error: (B, C, H, W) absolute error; regions: (B, H, W) integer labels.
    Returns (B, 1, H, W), detached.
    """
    B, C, H, W = error.shape
    e = error.detach().mean(1).reshape(B, H * W)  # channel mean per pixel
    group = batch_region_ids(regions.reshape(B, H * W)).flatten()
    n = B * H * W
    sums = torch.zeros(n, dtype=e.dtype, device=e.device).index_add_(0, group, e.flatten())
    counts = torch.zeros(n, dtype=e.dtype, device=e.device).index_add_(
        0, group, torch.ones_like(e.flatten()))
    means = sums / counts.clamp(min=1)
    top = means.max()
    w = (means / top).clamp(0, 1) if top > 0 else torch.zeros_like(means)
    return w[group].reshape(B, 1, H, W)


def focal_region_loss(
    pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor | None, beta: float = 1.0
) -> torch.Tensor:
    """pred, target: (B, C, H, W); regions: (B, H, W) integer or None (one region)."""
    e = (pred - target).abs()
    if beta == 0:
        return e.mean()
    if regions is None:
        regions = torch.zeros(e.shape[0], *e.shape[2:], dtype=torch.long, device=e.device)
    return (e * (1 + beta * region_weights(e, regions))).mean()


def overshoot_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean(relu(pred - max3x3(target)) + relu(min3x3(target) - pred)); (B, C, H, W)."""
    import torch.nn.functional as F

    hi = F.max_pool2d(target, 3, stride=1, padding=1)
    lo = -F.max_pool2d(-target, 3, stride=1, padding=1)
    return (torch.relu(pred - hi) + torch.relu(lo - pred)).mean()
