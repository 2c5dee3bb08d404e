"""`rat regions` as a library call: label maps (and overlays) for files, series and slides.

    for result in regions_many(["scans/"], "labels/", partitioner=make_partitioner()):
        print(result.to_dict())
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ratcli.batch import (
    Job,
    OnStart,
    OutputRule,
    Plan,
    Result,
    plan_batch,
    run_batch,
    set_threads,
)
from ratcli.errors import UsageError
from ratcli.io import (
    Domain,
    Image,
    Source,
    atomic_output,
    output_path_for,
    output_suffix_for,
    output_suffixes,
    read,
    write,
)
from ratcli.io.formats import all_formats, file_outputs
from ratcli.io.inputs import for_writer
from ratcli.io.padding import find_padding
from ratcli.joblog import JobLog
from ratcli.regions.base import Partitioner
from ratcli.regions.overlay import overlay_montage
from ratcli.shard import Shard
from ratcli.tasks import TASKS, task_for_modality

__all__ = ["RegionsResult", "regions_many", "LABEL_SUFFIXES"]

# suffixes a label map may be written as: writers that take any image
LABEL_SUFFIXES = output_suffixes(any_image=True)


@dataclass
class RegionsResult(Result):
    """One input (see batch.Result) plus the overlay written and the regions per slice
    (min, median, max)."""

    overlay: str | None = None
    regions: tuple[int, int, int] | None = None


def label_image(
    image: Image, partitioner: Partitioner, *, task: str = "auto", tile: int = 2048
) -> np.ndarray:
    """(Z, Y, X) int32 region labels for `image`.

    task: normalisation applied first, as inference does ("auto": the task of the
    image's modality, CT -> ct, PT -> pet, as `rat denoise --task auto` picks it, so both
    see the same slices and share region-cache entries; "none": the raw array). RGB is
    partitioned as uint8. Slices larger than `tile` on a side (whole slides) are
    partitioned tile by tile at the tile's scale, labels offset so that no two tiles
    share one.
    """
    array = image.array
    spec = task_for_modality(image.modality) if task == "auto" else TASKS.get(task)
    if spec is not None and not image.is_rgb:
        padding = find_padding(image, spec)  # the fill (CT: air) there, as inference sees
        array = array if padding is None else padding.filled(array)
        array = spec.normalize(array, spec.norm_params(array))
    partitioner = partitioner.for_task(None if image.is_rgb else spec)  # e.g. its CT window
    if max(image.size_yx) <= tile:
        return partitioner.partition_volume(array)
    return np.stack([_tiled(s, partitioner, tile) for s in array])


def regions_many(
    inputs: Iterable[str | Path],
    output: str | Path,
    *,
    partitioner: Partitioner,
    overlay: str | Path | None = None,
    task: str = "auto",
    tile: int = 2048,
    overwrite: bool = False,
    raise_errors: bool = False,
    on_start: OnStart | None = None,
    max_pixels: int | None = None,
    threads: int | None = None,
    shard: Shard | None = None,
    skip_existing: bool = False,
    log: str | Path | None = None,
    on_plan: Callable[[Plan], None] | None = None,
) -> Iterator[RegionsResult]:
    """Write a label map for every input below `inputs`; one RegionsResult per input.

    output: a folder mirroring the input tree (NIfTI for DICOM/NIfTI volumes, PNG/TIFF
        like the input for 2D images, TIFF for slides), or, for a single input, the
        label file itself when it has one of LABEL_SUFFIXES (naming as ratcli.batch).
    overlay: a PNG of region boundaries over the image (volumes: up to 9 slices side by
        side); a file for a single input, else a folder of `<name>.png`.
    on_start, max_pixels, threads, shard, skip_existing, log, on_plan: as for
        ratcli.api.restore_many.
    All outputs are planned and checked before any work (ratcli.batch); problems with
    one input are recorded in its result (raise_errors re-raises them).
    """
    if task not in ("auto", "none") and task not in TASKS:
        raise UsageError(f"--task {task}: choose auto, none or one of {', '.join(TASKS)}")
    set_threads(threads)

    def overlays(source: Source, out: Path, count: int) -> tuple[Path, ...]:
        if overlay is None:
            return ()
        # <input file name>.png: unambiguous when a.png and a.tif sit side by side
        return (Path(overlay) if count == 1
                else Path(overlay) / source.rel.parent / f"{source.rel.name}.png",)

    # a label map file: what each kind is written as, by writers of any image (DICOM ->
    # NIfTI, slide -> TIFF); a 2D image's map may take any such writer's suffix
    rule = OutputRule(file_suffixes={**{f.kind: file_outputs(f.kind, any_image=True)
                                        for f in all_formats()}, "image": LABEL_SUFFIXES},
                      folder_path=_label_path, extras=overlays, series_into_folder=False)
    plan = plan_batch(inputs, output, rule, overwrite=overwrite, raise_errors=raise_errors,
                      shard=shard, skip_existing=skip_existing)
    joblog = None if log is None else JobLog(
        log, shard=shard, device=str(getattr(partitioner, "device", "cpu")), command="regions")
    if on_plan is not None:
        on_plan(plan)

    def work(job: Job, info: dict) -> None:
        image = read(job.source, max_pixels=max_pixels)
        labels = label_image(image, partitioner, task=task, tile=tile)
        write(for_writer(_labels_as_image(image, labels, job.output), job.source),
              job.output, overwrite=overwrite,
              provenance={"task": f"regions:{partitioner.name}"})
        for path in job.extras:
            _write_png(overlay_montage(image.array, labels), path, overwrite=overwrite,
                       inputs=job.source.files)
            info["overlay"] = str(path)
        counts = [len(np.unique(s)) for s in labels]
        info["regions"] = (min(counts), int(np.median(counts)), max(counts))

    results = run_batch(plan, work, result_type=RegionsResult, raise_errors=raise_errors,
                        on_start=on_start)
    yield from results if joblog is None else joblog.record(results)


def _label_path(source: Source, root: str | Path) -> Path:
    """Where `source`'s label map goes under `root`: the mirrored output path when its
    suffix takes a label map, else (a DICOM file or series folder, whose writer takes
    only DICOM images) one compressed NIfTI volume beside it."""
    mirrored = output_path_for(source, root)
    own = output_suffix_for(source)
    if own and own in file_outputs(source.kind, any_image=True):
        return mirrored
    return mirrored.with_name(mirrored.name[: len(mirrored.name) - len(own)] + ".nii.gz")


def _labels_as_image(image: Image, labels: np.ndarray, out: Path) -> Image:
    """The label map as an Image on the source's grid (integers stored as uint16 in
    PNG/TIFF, exact as float32 in NIfTI)."""
    big = int(labels.max(initial=0)) > np.iinfo(np.uint16).max
    if big and out.suffix.lower() == ".png":
        raise UsageError(f"{out}: {int(labels.max())} regions do not fit a 16-bit PNG; "
                         "use .tif")
    meta = {"plain_dtype": "int32" if big else "uint16"}
    if "nifti_ndim" in image.meta:
        meta["nifti_ndim"] = image.meta["nifti_ndim"]
    return image.derived(labels.astype(np.float32), domain=Domain.GREY, modality="OT",
                         meta=meta)


def _tiled(slice2d: np.ndarray, partitioner: Partitioner, tile: int) -> np.ndarray:
    """Partition a large slice tile by tile; each tile's labels are offset past the
    previous tiles' so regions never span two tiles."""
    H, W = slice2d.shape[:2]
    out = np.empty((H, W), dtype=np.int32)
    offset = 0
    for y in range(0, H, tile):
        for x in range(0, W, tile):
            labels = partitioner(slice2d[y:y + tile, x:x + tile])
            _, dense = np.unique(labels, return_inverse=True)
            out[y:y + tile, x:x + tile] = dense.reshape(labels.shape) + offset + 1
            offset += int(dense.max()) + 1
    return out


def _write_png(rgb: np.ndarray, path: Path, *, overwrite: bool, inputs: Iterable[Path]) -> None:
    from PIL import Image as PILImage

    with atomic_output(path, overwrite=overwrite, inputs=inputs) as tmp:
        PILImage.fromarray(rgb).save(tmp, format="PNG")
