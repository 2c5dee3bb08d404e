"""Building blocks of RAT: LayerNorm2d, NAFBlock, the RAT layer and its attentions.

Layouts: NAFBlocks take and return (B, C, H, W) tensors but compute channels-last, so
LayerNorm is one `F.layer_norm` and the 1x1 convolutions are `F.linear` over channels
(the same arithmetic as a 1x1 conv); they return a channels_last view, which the next
block reads without a copy. RAT layers work on tokens (N, C) in *window order*: image,
window row, window column, then the ws x ws pixels of the window, so W-MSA windows are
plain views; `to_windows` / `from_windows` convert once per RAT group.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ratcli.models.attention import RegionPlan, window_attention

__all__ = ["LayerNorm2d", "NAFBlock", "RATLayer", "RegionMSA", "WindowMSA", "Mlp",
           "to_windows", "from_windows", "box_mean", "cell_mul"]

# On CPU, PyTorch's fused attention (torch 2.14, AVX2) takes ~1.5 ns per score at
# head_dim 16 but ~2.2 ns at head_dim 8 (8 heads, 1000-4000 tokens, one thread); R-MSA
# zero-pads smaller head dims to 16, which leaves every dot product and output as it was.
_CPU_MIN_HEAD_DIM = 16


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W) (biased variance, eps inside sqrt)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, H, W, C), normalise, back (a channels_last view)
        y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    """Split channels in two halves and multiply them: (B, 2C, H, W) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block: gated depthwise-conv mixer plus gated FFN, residuals scaled by beta/gamma.

    forward: (B, C, H, W) -> (B, C, H, W) channels_last. The modules keep NAFNet's
    names and shapes (checkpoints load unchanged); forward runs them channels-last.

    sca_window: the simplified channel attention pools over the whole input when 0 (as
    NAFNet); when > 0, over a sca_window x sca_window box around each small cell of
    pixels, shifted to stay inside the input (`box_mean`; TLC, Chu et al. 2022). On inputs
    no larger than the box both are the same; on larger ones the pool no longer depends
    on the tile size, so tiles can be as large as memory allows.
    """

    def __init__(self, channels: int, expand: int = 2, sca_window: int = 0) -> None:
        super().__init__()
        if sca_window < 0:
            raise ValueError(f"sca_window must be >= 0, got {sca_window}")
        self.sca_window = sca_window
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
        C = x.shape[1]
        x = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C); free for channels_last input
        y = _linear1x1(self._norm(self.norm1, x), self.conv1)  # (B, H, W, 2C)
        # depthwise 3x3 on the channels_last view of y
        y = self.conv2(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = y[..., :C] * y[..., C:]  # SimpleGate
        y = cell_mul(y, _linear1x1(box_mean(y, self.sca_window), self.sca[1]))
        x = torch.addcmul(x, self.beta.view(C), _linear1x1(y, self.conv3))
        y = _linear1x1(self._norm(self.norm2, x), self.conv4)
        y = _linear1x1(y[..., :C] * y[..., C:], self.conv5)
        x = torch.addcmul(x, self.gamma.view(C), y)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W) channels_last

    @staticmethod
    def _norm(norm: LayerNorm2d, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


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
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)


class RegionMSA(_MSA):
    """R-MSA: every token attends to the tokens of its own region."""

    def forward(self, x: torch.Tensor, plan: RegionPlan) -> torch.Tensor:
        """x: (N, C) tokens; plan: their grouping (built once per forward). -> (N, C)."""
        N, C = x.shape
        Hh, D = self.num_heads, self.head_dim
        pad = _CPU_MIN_HEAD_DIM - D if x.device.type == "cpu" and D < _CPU_MIN_HEAD_DIM else 0
        w, b, pw = self.qkv.weight, self.qkv.bias, self.proj.weight
        if pad:  # zero rows of q, k, v per head and matching zero columns of proj
            w = F.pad(w.view(3, Hh, D, C), (0, 0, 0, pad)).reshape(-1, C)
            b = F.pad(b.view(3, Hh, D), (0, pad)).reshape(-1)
            pw = F.pad(pw.view(C, Hh, D), (0, pad)).reshape(C, -1)
        qkv = F.linear(plan.group(x), w, b).view(plan.rows, 3, Hh, D + pad)  # packed rows
        o = plan.attend(qkv, scale=D**-0.5)  # (N, heads, D + pad), token order
        return F.linear(o.reshape(N, -1), pw, self.proj.bias)


class WindowMSA(_MSA):
    """W-MSA: attention inside non-overlapping ws x ws windows."""

    def __init__(self, dim: int, num_heads: int, window: int = 4) -> None:
        super().__init__(dim, num_heads)
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C) tokens in window order -> (N, C)."""
        N, C = x.shape
        # (N, 3C) -> (nW, ws*ws, 3, heads, hd) -> three (nW, heads, ws*ws, hd)
        qkv = self.qkv(x).view(-1, self.window**2, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        o = window_attention(q, k, v).transpose(1, 2)  # (nW, ws*ws, heads, hd)
        return self.proj(o.reshape(N, C))


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

    def forward(self, x: torch.Tensor, plan: RegionPlan | None) -> torch.Tensor:
        """x: (N, C) tokens in window order; plan: the forward's RegionPlan (unused
        without R-MSA)."""
        if self.rmsa is not None:
            if plan is None:
                raise ValueError("a RAT layer with region attention needs a RegionPlan")
            x = torch.addcmul(x, self.lambda_r, self.rmsa(self.norm1(x), plan))
        x = x + self.mlp1(self.norm2(x))
        x = torch.addcmul(x, self.lambda_w, self.wmsa(self.norm3(x)))
        return x + self.mlp2(self.norm4(x))


def to_windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, C, H, W) or (B, H, W) labels -> tokens (B*H*W, C) or (B, H*W) in window order."""
    if x.ndim == 3:  # labels: (B, H, W) -> (B, H/ws, W/ws, ws, ws) -> (B, L)
        B, H, W = x.shape
        return x.reshape(B, H // ws, ws, W // ws, ws).transpose(2, 3).reshape(B, H * W)
    B, C, H, W = x.shape
    # (B, C, H, W) -> (B, H/ws, ws, W/ws, ws, C) -> (B, H/ws, W/ws, ws, ws, C)
    t = x.permute(0, 2, 3, 1).reshape(B, H // ws, ws, W // ws, ws, C).transpose(2, 3)
    return t.reshape(B * H * W, C)


def from_windows(t: torch.Tensor, shape: tuple[int, int, int, int], ws: int) -> torch.Tensor:
    """Tokens (B*H*W, C) in window order -> (B, C, H, W) channels_last; shape = (B, C, H, W)."""
    B, C, H, W = shape
    # (B, H/ws, W/ws, ws, ws, C) -> (B, H/ws, ws, W/ws, ws, C) -> (B, H, W, C)
    x = t.view(B, H // ws, W // ws, ws, ws, C).transpose(2, 3).reshape(B, H, W, C)
    return x.permute(0, 3, 1, 2)


def box_mean(y: torch.Tensor, k: int) -> torch.Tensor:
    """(B, H, W, C) -> local means (B, h, w, C) over k x k boxes, one per cell of c x c
    pixels (c = gcd(k / 8, H, W), h = H / c). The box is the k / c cells that start
    (k / c - 1) // 2 cells before the cell (centred to within c / 2 pixels), shifted to
    lie inside the image; an edge not longer than k is averaged whole. k = 0 or an image
    within k x k: the global mean, (B, 1, 1, C). Apply with `cell_mul`."""
    B, H, W, C = y.shape
    if k == 0 or max(H, W) <= k:
        return y.mean((1, 2), keepdim=True)
    c = math.gcd(max(k // 8, 1), H, W)
    cells = y.view(B, H // c, c, W // c, c, C).mean((2, 4))  # (B, H/c, W/c, C)
    return _box_mean_1d(_box_mean_1d(cells, k // c, dim=1), k // c, dim=2)


def _box_mean_1d(y: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    n = y.shape[dim]
    if n <= k:
        return y.mean(dim, keepdim=True).expand_as(y)
    # float32 sums under fp16/bf16 autocast; a leading zero so window sums are S[e] - S[s]
    s = torch.cumsum(y, dim, dtype=torch.promote_types(y.dtype, torch.float32))
    s = torch.cat([torch.zeros_like(s.narrow(dim, 0, 1)), s], dim)
    start = (torch.arange(n, device=y.device) - (k - 1) // 2).clamp(0, n - k)
    total = s.index_select(dim, start + k) - s.index_select(dim, start)
    return (total / k).to(y.dtype)


def cell_mul(y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """y (B, H, W, C) times a (B, h, w, C) repeated over the H/h x W/w pixels of each cell."""
    B, H, W, C = y.shape
    h, w = a.shape[1:3]
    if (h, w) == (1, 1):
        return y * a
    return (y.view(B, h, H // h, w, W // w, C) * a[:, :, None, :, None]).view(B, H, W, C)


def _linear1x1(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution on channels-last (..., C_in) -> (..., C_out)."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)
