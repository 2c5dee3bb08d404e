"""`rat regions` as a library call: label maps (and overlays) for files, series and slides.

    for result in regions_many(["scans/"], "labels/", partitioner=make_partitioner()):
        print(result.to_dict())
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ratcli.errors import OutputExistsError, RatError, UsageError
from ratcli.io import (
    Domain,
    Image,
    Source,
    atomic_output,
    find_inputs,
    output_path_for,
    output_suffix_for,
    read,
    write,
)
from ratcli.regions.base import Partitioner
from ratcli.regions.overlay import overlay_montage
from ratcli.tasks import TASKS

__all__ = ["RegionsResult", "regions_many", "label_image", "LABEL_SUFFIXES"]

LABEL_SUFFIXES = (".nii", ".nii.gz", ".png", ".tif", ".tiff")
# Same choice as `rat denoise --task auto`, so both see the same normalised slices and
# share region-cache entries.
_TASK_BY_MODALITY = {"CT": "ct", "PT": "pet"}


@dataclass
class RegionsResult:
    """One input: paths written, status "ok"/"error", seconds, regions per slice
    (min, median, max), and the one-line error (None when ok)."""

    input: str
    output: str | None
    overlay: str | None
    status: str
    seconds: float
    regions: tuple[int, int, int] | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def label_image(
    image: Image, partitioner: Partitioner, *, task: str = "auto", tile: int = 2048
) -> np.ndarray:
    """(Z, Y, X) int32 region labels for `image`.

    task: normalisation applied first, as inference does ("auto": by modality, CT -> ct,
    PT -> pet; "none": the raw array). RGB is partitioned as uint8. Slices larger than
    `tile` on a side (whole slides) are partitioned tile by tile at the tile's scale,
    labels offset so that no two tiles share one.
    """
    array = image.array
    name = _TASK_BY_MODALITY.get(image.modality) if task == "auto" else task
    if name not in (None, "none") and not image.is_rgb:
        spec = TASKS[name]
        array = spec.normalize(array, spec.norm_params(array))
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
    on_start: Callable[[Source, Path], None] | None = None,
) -> Iterator[RegionsResult]:
    """Write a label map for every input below `inputs`; one RegionsResult per input.

    output: a folder mirroring the input tree (NIfTI for DICOM/NIfTI volumes, PNG/TIFF
        like the input for 2D images, TIFF for slides), or, for a single input, the
        label file itself when it has one of LABEL_SUFFIXES.
    overlay: a PNG of region boundaries over the image (volumes: up to 9 slices side by
        side); a file for a single input, else a folder of `<name>.png`.
    Problems with one input are recorded in its result (raise_errors re-raises them).
    """
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise UsageError("no inputs given")
    if task not in ("auto", "none") and task not in TASKS:
        raise UsageError(f"--task {task}: choose auto, none or one of {', '.join(TASKS)}")
    sources: list[Source] = []
    errors: list[RegionsResult] = []
    for item in inputs:
        try:
            sources += find_inputs(item)
        except RatError as exc:
            if raise_errors:
                raise
            errors.append(RegionsResult(str(item), None, None, "error", 0.0, error=str(exc)))
    yield from errors
    single = len(sources) == 1 and str(output).lower().endswith(LABEL_SUFFIXES)
    for source in sources:
        out = Path(output) if single else _label_path(source, output)
        ov = None
        if overlay is not None:
            # <input file name>.png: unambiguous when a.png and a.tif sit side by side
            ov = (Path(overlay) if len(sources) == 1
                  else Path(overlay) / source.rel.parent / f"{source.rel.name}.png")
        if on_start is not None:
            on_start(source, out)
        yield _run_one(source, out, ov, partitioner=partitioner, task=task, tile=tile,
                       overwrite=overwrite, raise_errors=raise_errors)


def _run_one(source: Source, out: Path, overlay_path: Path | None, *, partitioner: Partitioner,
             task: str, tile: int, overwrite: bool, raise_errors: bool) -> RegionsResult:
    start = time.perf_counter()
    try:
        for p in (out, overlay_path):
            if p is not None and p.exists() and not overwrite:
                raise OutputExistsError(f"{p}: output exists (use --overwrite to replace it)")
        image = read(source)
        labels = label_image(image, partitioner, task=task, tile=tile)
        write(_labels_as_image(image, labels, out), out, overwrite=overwrite,
              provenance={"task": f"regions:{partitioner.name}"})
        if overlay_path is not None:
            _write_png(overlay_montage(image.array, labels), overlay_path,
                       overwrite=overwrite, inputs=source.files)
    except RatError as exc:
        if raise_errors:
            raise
        return RegionsResult(str(source.path), None, None, "error",
                             time.perf_counter() - start, error=str(exc))
    counts = [len(np.unique(s)) for s in labels]
    return RegionsResult(str(source.path), str(out),
                         str(overlay_path) if overlay_path else None, "ok",
                         time.perf_counter() - start,
                         regions=(min(counts), int(np.median(counts)), max(counts)))


def _label_path(source: Source, root: str | Path) -> Path:
    """Where `source`'s label map goes under `root`: the mirrored output path, NIfTI
    for DICOM, else the input's own output suffix."""
    mirrored = output_path_for(source, root)
    own = output_suffix_for(source)
    if source.kind != "dicom":
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
