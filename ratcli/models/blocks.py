"""Building blocks of RAT: LayerNorm2d, NAFBlock, the RAT layer and its attentions.

Layouts: NAFBlocks work on (B, C, H, W); the RAT layer works channels-last on
(B, H, W, C) so that LayerNorm, MLP and attention projections are plain Linear layers
(a Linear over channels is a 1x1 convolution).
"""

from __future__ import annotations

import torch
from torch import nn

from ratcli.models.attention import region_attention, window_attention

__all__ = ["LayerNorm2d", "NAFBlock", "RATLayer", "RegionMSA", "WindowMSA", "Mlp"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class SimpleGate(nn.Module):
    """Split channels in two halves and multiply them: (B, 2C, H, W) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block: gated depthwise-conv mixer plus gated FFN, residuals scaled by beta/gamma."""

    def __init__(self, channels: int, expand: int = 2) -> None:
        super().__init__()
        hidden = channels * expand
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.gate = SimpleGate()
        # simplified channel attention
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden // 2, hidden // 2, 1))
        self.conv3 = nn.Conv2d(hidden // 2, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = nn.Conv2d(channels, hidden, 1)
        self.conv5 = nn.Conv2d(hidden // 2, channels, 1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate(self.conv2(self.conv1(self.norm1(x))))
        y = self.conv3(y * self.sca(y))
        x = x + self.beta * y
        y = self.conv5(self.gate(self.conv4(self.norm2(x))))
        return x + self.gamma * y


class Mlp(nn.Module):
    """Token MLP: Linear C->hidden, GELU, Linear hidden->C."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _MSA(nn.Module):
    """Shared qkv / output projections of the two attentions."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, L, C) -> three (N, heads, L, head_dim)."""
        N, L, C = x.shape
        qkv = self.qkv(x).reshape(N, L, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (3, N, heads, L, hd)
        return q, k, v

    def _out(self, o: torch.Tensor) -> torch.Tensor:
        """(N, heads, L, head_dim) -> (N, L, C)."""
        N, Hh, L, D = o.shape
        return self.proj(o.transpose(1, 2).reshape(N, L, Hh * D))


class RegionMSA(_MSA):
    """R-MSA: every token attends to the tokens of its own region."""

    def forward(self, x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C); regions: (B, H, W) integer labels at the same resolution."""
        B, H, W, C = x.shape
        q, k, v = self._qkv(x.reshape(B, H * W, C))
        o = region_attention(q, k, v, regions.reshape(B, H * W))
        return self._out(o).reshape(B, H, W, C)


class WindowMSA(_MSA):
    """W-MSA: attention inside non-overlapping ws x ws windows (H, W multiples of ws)."""

    def __init__(self, dim: int, num_heads: int, window: int = 4) -> None:
        super().__init__(dim, num_heads)
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        B, H, W, C = x.shape
        ws = self.window
        # (B, H, W, C) -> (B * nW, ws*ws, C)
        w = x.reshape(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
        w = w.reshape(-1, ws * ws, C)
        o = self._out(window_attention(*self._qkv(w)))
        # (B * nW, ws*ws, C) -> (B, H, W, C)
        o = o.reshape(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
        return o.reshape(B, H, W, C)


class RATLayer(nn.Module):
    """x += lr * R-MSA(LN x); x += MLP(LN x); x += lw * W-MSA(LN x); x += MLP(LN x).

    `region_attn=False` builds the window-only ablation (lambda_r fixed at 0).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        window: int = 4,
        mlp_ratio: float = 2.0,
        region_attn: bool = True,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.region_attn = region_attn
        self.norm1 = norm_layer(dim)
        self.rmsa = RegionMSA(dim, num_heads) if region_attn else None
        self.lambda_r = nn.Parameter(torch.zeros(dim)) if region_attn else None
        self.norm2 = norm_layer(dim)
        self.mlp1 = Mlp(dim, hidden)
        self.norm3 = norm_layer(dim)
        self.wmsa = WindowMSA(dim, num_heads, window)
        self.lambda_w = nn.Parameter(torch.zeros(dim))
        self.norm4 = norm_layer(dim)
        self.mlp2 = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C); regions: (B, H, W) integer."""
        if self.rmsa is not None:
            x = x + self.lambda_r * self.rmsa(self.norm1(x), regions)
        x = x + self.mlp1(self.norm2(x))
        x = x + self.lambda_w * self.wmsa(self.norm3(x))
        return x + self.mlp2(self.norm4(x))
