"""The Region Attention Transformer: a NAFNet-style two-level U-Net with RAT layers
at the H/4 bottleneck (see ../shared/spec/RAT.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ratcli.models.attention import RegionPlan
from ratcli.models.blocks import NAFBlock, RATLayer, from_windows, to_windows

__all__ = ["RATConfig", "RegionAttentionTransformer", "build_rat", "pad_to_multiple"]


@dataclass(frozen=True)
class RATConfig:
    """Constructor arguments of `RegionAttentionTransformer` (stored in checkpoints)."""

    in_channels: int = 1
    out_channels: int = 1
    width: int = 64
    num_heads: int = 8
    num_groups: int = 4
    layers_per_group: int = 3
    enc_blocks: int = 2
    dec_blocks: int = 2
    window: int = 4
    mlp_ratio: float = 2.0
    scale: int = 1
    region_attn: bool = True
    input_shift: float = 0.0
    input_gain: float = 1.0
    input_detail: float = 0.0
    region_block: int = 0
    sca_window: int = 0
    context_slices: int = 0
    noise_ref: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class RATGroup(nn.Module):
    """`depth` RAT layers then a conv3x3, with a residual around the group."""

    def __init__(self, dim: int, depth: int, window: int = 4, **layer_kwargs) -> None:
        super().__init__()
        self.window = window
        self.layers = nn.ModuleList(RATLayer(dim, window=window, **layer_kwargs)
                                    for _ in range(depth))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, plan: RegionPlan | None) -> torch.Tensor:
        """x: (B, C, H, W), H and W multiples of the window; plan: grouping of its tokens
        in window order (None without region attention)."""
        y = to_windows(x, self.window)  # (B*H*W, C)
        for layer in self.layers:
            y = layer(y, plan)
        return x + self.conv(from_windows(y, x.shape, self.window))


class RegionAttentionTransformer(nn.Module):
    """RAT restoration network.

    forward(x, regions, noise): x (B, in_ch, H, W) normalised intensities; regions
    (B, H*scale, W*scale) integer labels at output resolution, or None for one region
    per image; noise (B,) each image's noise std in normalised units (noise-aware
    models only, see noise_ref; ignored otherwise). Returns (B, out_ch, H*scale,
    W*scale). Any H, W works: the input is reflect-padded to a multiple of 16 and the
    output cropped back.

    input_shift, input_gain: a fixed affine map of the normalised intensities,
    x' = (x - shift) * gain, undone on the output. Low-dose CT noise is ~0.5 % of the
    4096-HU normalisation window; a gain of 4-10 brings it to the scale the layer norms
    and initialisations are made for, which trains many times faster (weights/README.md).

    input_detail: when > 0, the stem also sees a detail channel, (x - 5x5 box mean of
    x) * input_detail, zero-mean on flat areas at any intensity. Without it, noise on a
    flat area far from `input_shift` (air at -1000 HU) is a small change on top of a
    large offset that the per-pixel layer norms wash out, and the model leaves it alone.

    region_block: when > 0, R-MSA regions are also cut by a grid of region_block x
    region_block input pixels from the (padded) tile's origin. A model trained on
    P-pixel patches never saw a region larger than a patch; with region_block = P it
    sees the same at inference on any tile size, and R-MSA costs O(L * P^2 / 16) instead
    of O(L^2) per tile. 0 keeps regions whole (the checkpoints trained before it).

    noise_ref: when > 0 the model is noise-aware (FFDNet-style): the stem also sees a
    constant channel log2(noise / noise_ref), clamped to +-noise_octaves, from each
    image's noise level (ratcli.inference.noise). A real full-dose CT has grain of its
    own, and how much of an input's grain to keep depends on how much noise was added,
    which a 64-pixel training patch shows poorly. 0: no such channel.

    sca_window: when > 0, the NAFBlocks' channel attention pools over a box of
    sca_window x sca_window pixels at the first level (half that at H/2) instead of the
    whole tile (NAFBlock). Training patches and tiles no larger than the box compute what
    they did with whole-tile pooling; the shipped checkpoints set it to the tile they were
    validated with, so any larger tile computes about what those tiles did (the bigger
    tile only drops the overlap). 0 pools the whole tile (older checkpoints).
    """

    noise_octaves = 5.0  # the noise channel's clamp: 1/32 to 32 times noise_ref
    multiple = 16  # two stride-2 downsamplings, then 4x4 windows (4 * window in general)
    big_region = 64  # R-MSA: regions with more tokens are never padded into a shared call

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 64,
        num_heads: int = 8,
        num_groups: int = 4,
        layers_per_group: int = 3,
        enc_blocks: int = 2,
        dec_blocks: int = 2,
        window: int = 4,
        mlp_ratio: float = 2.0,
        scale: int = 1,
        region_attn: bool = True,
        input_shift: float = 0.0,
        input_gain: float = 1.0,
        input_detail: float = 0.0,
        region_block: int = 0,
        sca_window: int = 0,
        context_slices: int = 0,
        noise_ref: float = 0.0,
    ) -> None:
        super().__init__()
        if input_gain <= 0:
            raise ValueError(f"input_gain must be > 0, got {input_gain}")
        self.input_shift, self.input_gain = float(input_shift), float(input_gain)
        if input_detail < 0:
            raise ValueError(f"input_detail must be >= 0, got {input_detail}")
        self.input_detail = float(input_detail)
        if region_block < 0 or region_block % (4 * window):
            raise ValueError(f"region_block must be 0 or a multiple of {4 * window}, "
                             f"got {region_block}")
        self.region_block = region_block
        if sca_window < 0 or sca_window % 2:
            raise ValueError(f"sca_window must be 0 or a positive even number, got {sca_window}")
        self.sca_window = sca_window
        k1, k2 = sca_window, sca_window // 2  # box edge at H and at H/2
        if scale not in (1, 2, 4):
            raise ValueError(f"scale must be 1, 2 or 4, got {scale}")
        self.scale = scale
        self.window = window
        self.multiple = 4 * window
        self.region_attn = region_attn
        if context_slices < 0:
            raise ValueError(f"context_slices must be >= 0, got {context_slices}")
        if context_slices and (scale != 1 or in_channels != 1):
            raise ValueError("context_slices (2.5D input) is for greyscale CT/PET volumes: "
                             f"needs scale 1 and in_channels 1, got {scale} and {in_channels}")
        self.context_slices = context_slices
        if noise_ref < 0:
            raise ValueError(f"noise_ref must be >= 0, got {noise_ref}")
        self.noise_ref = float(noise_ref)
        self.in_channels, self.out_channels = in_channels, out_channels  # per slice
        stem_in = in_channels * (2 * context_slices + 1) * (2 if input_detail else 1)
        stem_in += 1 if noise_ref else 0  # the noise-level channel comes last
        c1, c2, c4 = width, 2 * width, 4 * width
        self.stem = nn.Conv2d(stem_in, c1, 3, padding=1)
        self.enc1 = nn.Sequential(*(NAFBlock(c1, sca_window=k1) for _ in range(enc_blocks)))
        self.down1 = nn.Conv2d(c1, c2, 2, stride=2)
        self.enc2 = nn.Sequential(*(NAFBlock(c2, sca_window=k2) for _ in range(enc_blocks)))
        self.down2 = nn.Conv2d(c2, c4, 2, stride=2)
        self.groups = nn.ModuleList(
            RATGroup(
                c4,
                layers_per_group,
                num_heads=num_heads,
                window=window,
                mlp_ratio=mlp_ratio,
                region_attn=region_attn,
            )
            for _ in range(num_groups)
        )
        self.up2 = nn.Sequential(nn.Conv2d(c4, c4 * 2, 1), nn.PixelShuffle(2))  # -> c2
        self.dec2 = nn.Sequential(*(NAFBlock(c2, sca_window=k2) for _ in range(dec_blocks)))
        self.up1 = nn.Sequential(nn.Conv2d(c2, c2 * 2, 1), nn.PixelShuffle(2))  # -> c1
        self.dec1 = nn.Sequential(*(NAFBlock(c1, sca_window=k1) for _ in range(dec_blocks)))
        self.head = nn.Conv2d(c1, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape  # C = (2k+1) * in_channels, slice z-k first
        k, c = self.context_slices, self.in_channels
        stacked = (2 * k + 1) * c
        if stacked != C:
            raise ValueError(f"x must have {stacked} channels ({2 * k + 1} slices of {c}), "
                             f"got {C}")
        if self.scale > 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
            H, W = H * self.scale, W * self.scale
        x = (x - self.input_shift) * self.input_gain
        if regions is None:
            regions = torch.zeros(B, H, W, dtype=torch.long, device=x.device)
        elif regions.shape != (B, H, W):
            raise ValueError(f"regions must have shape {(B, H, W)}, got {tuple(regions.shape)}")
        xp = pad_to_multiple(x, self.multiple)
        sp = xp
        centre = xp[:, k * c : (k + 1) * c]  # (B, c, Hp, Wp): slice z, the one restored
        if self.input_detail:  # one detail channel per input channel, after all of them
            mean = F.avg_pool2d(F.pad(xp, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
            sp = torch.cat([xp, (xp - mean) * (self.input_detail / self.input_gain)], dim=1)
        if self.noise_ref:
            sp = torch.cat([sp, self._noise_channel(noise, sp)], dim=1)
        plan = None
        if self.region_attn:
            # nearest-neighbour to H/4: the centre-ish pixel of each 4x4 block
            r4 = pad_to_multiple(regions, self.multiple)[:, 2::4, 2::4]
            big = self.big_region
            if self.region_block:  # cells of (region_block / 4)^2 tokens, batched whole
                cell = self.region_block // 4
                r4, big = _cut_by_blocks(r4, cell), cell * cell
            plan = RegionPlan.build(to_windows(r4, self.window), big=big)
        sp = sp.contiguous(memory_format=torch.channels_last)  # every conv runs channels-last

        e1 = self.enc1(self.stem(sp))  # (B, c1, H, W)
        e2 = self.enc2(self.down1(e1))  # (B, c2, H/2, W/2)
        b = self.down2(e2)  # (B, c4, H/4, W/4)
        y = b
        for group in self.groups:
            y = group(y, plan)
        y = y + b
        d2 = self.dec2(self.up2(y) + e2)
        d1 = self.dec1(self.up1(d2) + e1)
        out = self.head(d1)
        if self.out_channels == c:  # global residual: the net predicts a correction
            out = out + centre
        return out[..., :H, :W] / self.input_gain + self.input_shift

    def _noise_channel(self, noise: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """(B,) noise std -> (B, 1, Hp, Wp) constant log2(noise / noise_ref) maps."""
        B, _, Hp, Wp = like.shape
        if noise is None or noise.shape != (B,):
            got = None if noise is None else tuple(noise.shape)
            raise ValueError(f"a noise-aware model needs noise of shape {(B,)}, got {got}")
        floor = self.noise_ref * 2.0 ** -self.noise_octaves
        level = torch.log2(noise.float().clamp_min(floor) / self.noise_ref)
        level = level.clamp(-self.noise_octaves, self.noise_octaves).to(like.dtype)
        return level.view(B, 1, 1, 1).expand(B, 1, Hp, Wp)


def build_rat(config: RATConfig) -> RegionAttentionTransformer:
    """The one place a config becomes a model."""
    return RegionAttentionTransformer(**config.to_dict())


def _cut_by_blocks(labels: torch.Tensor, block: int) -> torch.Tensor:
    """(B, h, w) labels -> labels equal only where the old ones were equal and the two
    tokens lie in the same block x block cell of the grid."""
    B, h, w = labels.shape
    rows = torch.arange(h, device=labels.device) // block
    cols = torch.arange(w, device=labels.device) // block
    per_row = -(-w // block)
    cell = rows[:, None] * per_row + cols[None, :]  # (h, w)
    return labels.long() * (-(-h // block) * per_row) + cell


def pad_to_multiple(t: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the last two dims of any tensor (float or integer labels) up to a multiple.

    Works through index arithmetic, so integer label maps and images tiny enough that
    `F.pad(mode="reflect")` would refuse (pad >= size) are padded the same way.
    """
    H, W = t.shape[-2:]
    Hp, Wp = -(-H // multiple) * multiple, -(-W // multiple) * multiple
    if (Hp, Wp) == (H, W):
        return t
    rows = _reflect_index(H, Hp, t.device)
    cols = _reflect_index(W, Wp, t.device)
    return t[..., rows, :][..., cols]


def _reflect_index(n: int, total: int, device: torch.device) -> torch.Tensor:
    """Indices 0..total-1 folded into [0, n) by reflection without repeating the edge."""
    i = torch.arange(total, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i % period
    return torch.where(i < n, i, period - i)
