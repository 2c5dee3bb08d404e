"""`make_partitioner`: the one place a `--regions` choice becomes a partitioner."""

from __future__ import annotations

import inspect
from enum import StrEnum
from pathlib import Path

from ratcli.errors import UsageError, WeightsNotFoundError
from ratcli.regions.base import NonePartitioner, Partitioner, PrecomputedPartitioner
from ratcli.regions.cache import CachedPartitioner, RegionCache
from ratcli.regions.classical import ClassicalPartitioner

__all__ = ["make_partitioner", "Method", "FALLBACK_MESSAGE"]

FALLBACK_MESSAGE = (
    "no SAM checkpoint found (--sam-checkpoint, RAT_SAM_CHECKPOINT or "
    "`rat weights fetch sam-vit-b`); using the classical region partitioner"
)


class Method(StrEnum):
    """Named partitioning methods; anything else given to `--regions` is a file path."""

    AUTO = "auto"
    SAM = "sam"
    CLASSICAL = "classical"
    NONE = "none"


def make_partitioner(
    method: str = "auto",
    *,
    sam_checkpoint: str | Path | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    **settings,
) -> Partitioner:
    """A partitioner for `method`: "sam", "classical", "none", "auto" or a label-map PATH.

    "auto" is "sam" when a SAM checkpoint is configured (`sam_checkpoint`, a path or a
    manifest name; else RAT_SAM_CHECKPOINT; else a sam-vit-* file in the weights dirs),
    otherwise "classical" with `.fallback` set to a one-line reason for the caller to
    show. `settings` go to the method's constructor (SamPartitioner: points_per_side,
    pred_iou_thresh, ..., device; ClassicalPartitioner: n_segments, threshold, ...);
    with "auto", settings of the method not chosen are ignored. `cache` wraps sam and
    classical in the on-disk region cache (`cache_dir`, default RAT_CACHE or the user
    cache dir).
    """
    from ratcli.weights import find_sam_checkpoint

    try:
        chosen = Method(str(method))
    except ValueError:
        return _precomputed(method, settings)
    fallback = None
    checkpoint = None
    if chosen in (Method.AUTO, Method.SAM):
        checkpoint = find_sam_checkpoint(sam_checkpoint)
        if checkpoint is None and chosen is Method.SAM:
            raise WeightsNotFoundError(
                "sam: no SAM checkpoint configured; pass --sam-checkpoint PATH, set "
                "RAT_SAM_CHECKPOINT, or run `rat weights fetch sam-vit-b`"
            )
        if checkpoint is None:
            chosen, fallback = Method.CLASSICAL, FALLBACK_MESSAGE
    if chosen is Method.NONE:
        _check_settings(NonePartitioner, settings, strict=True)
        return NonePartitioner()
    if chosen is Method.CLASSICAL:
        part: Partitioner = ClassicalPartitioner(
            **_check_settings(ClassicalPartitioner, settings, strict=fallback is None))
    else:
        from ratcli.regions.sam import SamPartitioner

        part = SamPartitioner(checkpoint,
                              **_check_settings(SamPartitioner, settings,
                                                strict=method != Method.AUTO))
    part.fallback = fallback
    return CachedPartitioner(part, RegionCache(cache_dir)) if cache else part


def _precomputed(method: str | Path, settings: dict) -> Partitioner:
    path = Path(method).expanduser()
    if not path.is_file():
        choices = ", ".join(m.value for m in Method)
        raise UsageError(f"{method}: --regions must be one of {choices} or an existing "
                         "label-map file")
    _check_settings(PrecomputedPartitioner, settings, strict=True)
    return PrecomputedPartitioner(path)


def _check_settings(cls: type, settings: dict, *, strict: bool) -> dict:
    """The settings `cls` accepts; unknown ones raise UsageError when `strict`."""
    params = inspect.signature(cls.__init__).parameters
    accepted = {k for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(settings) - accepted)
    if unknown and strict:
        raise UsageError(f"regions: {', '.join(unknown)} is not a setting of the "
                         f"{cls.name} partitioner (settings: {', '.join(sorted(accepted))})")
    return {k: v for k, v in settings.items() if k in accepted}
