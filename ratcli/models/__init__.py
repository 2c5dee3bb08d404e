"""RAT network, its blocks and checkpoint helpers."""

from ratcli.models.attention import RegionPlan, region_attention, window_attention
from ratcli.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ratcli.models.rat import RATConfig, RegionAttentionTransformer, build_rat

__all__ = [
    "Checkpoint",
    "RATConfig",
    "RegionAttentionTransformer",
    "RegionPlan",
    "build_rat",
    "load_checkpoint",
    "region_attention",
    "save_checkpoint",
    "window_attention",
]
