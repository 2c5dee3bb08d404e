"""Region maps for RAT's region attention: LiteMedSAM (the default), SAM, a classical
SAM-free partitioner, the trivial one-region map, precomputed files, and an on-disk cache.

    from ratcli.regions import make_partitioner
    part = make_partitioner("auto")          # litemedsam when installed, else sam, else classical
    labels = part(slice2d)                   # (H, W) float32 or (H, W, 3) uint8 -> (H, W) int32
    volume_labels = part.partition_volume(array)   # (Z, H, W[, 3]) -> (Z, H, W) int32
    if part.fallback: ...                    # auto fell back to classical: tell the user
    part, warning = for_model(part, task, ckpt.meta.get("regions"))  # a model's own method
"""

from ratcli.regions.base import (
    NonePartitioner,
    Partitioner,
    PrecomputedPartitioner,
    to_uint8,
    upscale_labels,
)
from ratcli.regions.cache import CachedPartitioner, RegionCache
from ratcli.regions.classical import ClassicalPartitioner
from ratcli.regions.factory import FALLBACK_MESSAGE, Method, for_model, make_partitioner

__all__ = [
    "FALLBACK_MESSAGE",
    "CachedPartitioner",
    "ClassicalPartitioner",
    "Method",
    "NonePartitioner",
    "Partitioner",
    "for_model",
    "PrecomputedPartitioner",
    "RegionCache",
    "make_partitioner",
    "to_uint8",
    "upscale_labels",
]
