"""Plain-Python entry points shared by the CLI and notebooks.

    for result in restore_many(["scans/"], "out/", mode="denoise", weights="ct.pt"):
        print(result.to_dict())

`restore_many` finds every input (files, folders searched recursively, DICOM series),
restores each one and yields one `RestoreResult` per input, so one bad file does not
stop the others. `restore_path` does one input; `restore` works on an in-memory Image.
Problems that concern the whole run (bad options, missing or unusable weights) raise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from ratcli.errors import (
    CheckpointError,
    InputFormatError,
    OutputExistsError,
    OutputNotWritableError,
    RatError,
    UsageError,
    WeightsNotFoundError,
)
from ratcli.inference import Restorer, resolve_device
from ratcli.inference.restorer import Partitioner, ProgressFn
from ratcli.io import Image, Source, atomic_output, find_inputs, output_path_for, read, write
from ratcli.io.atomic import check_not_input
from ratcli.tasks import TASKS, TaskSpec, get_task

__all__ = ["Mode", "RestoreResult", "Session", "restore_many", "restore_path", "restore"]

_FILE_SUFFIXES = (".nii", ".nii.gz", ".png", ".tif", ".tiff", ".dcm")
# Task picked by `--task auto` from an image's modality (denoising).
_BY_MODALITY = {"CT": "ct", "PT": "pet"}
# Failures that concern every input of the run: they abort it instead of being recorded.
_RUN_WIDE = (UsageError, CheckpointError, WeightsNotFoundError)


class Mode(StrEnum):
    """The command: denoise (scale 1) or sr (scale 2 or 4)."""

    DENOISE = "denoise"
    SR = "sr"


@dataclass
class RestoreResult:
    """One input's outcome: input and output paths, status "ok" or "error", wall seconds,
    task used, and the one-line error message (None when ok)."""

    input: str
    output: str | None
    status: str
    seconds: float
    task: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Session:
    """Models, weights and settings for one run, loaded once and reused per input.

    mode: Mode; task: a TASKS name or "auto"; scale: SR factor (sr mode; None = from
    the task or the weights); weights: a manifest name or a checkpoint path (None = the
    task's default name); the rest go to `Restorer`.
    """

    def __init__(
        self,
        *,
        mode: str | Mode = Mode.DENOISE,
        task: str = "auto",
        scale: int | None = None,
        weights: str | Path | None = None,
        device: str = "auto",
        tile: int | None = None,
        overlap: float = 0.25,
        batch_size: int = 4,
        partitioner: Partitioner | str | None = "auto",
        on_tiles: ProgressFn | None = None,
    ) -> None:
        self.mode = Mode(mode)
        self.scale = scale
        self.weights = weights
        self.device = resolve_device(device)  # UsageError now, not per input
        if not 0.0 <= overlap <= 0.5:
            raise UsageError(f"--overlap {overlap}: must be between 0 and 0.5")
        if tile is not None and tile < 16:
            raise UsageError(f"--tile {tile}: must be at least 16 pixels")
        if batch_size < 1:
            raise UsageError(f"--batch-size {batch_size}: must be at least 1")
        if self.mode is Mode.SR and scale not in (None, 2, 4):
            raise UsageError(f"--scale {scale}: must be 2 or 4")
        self.tile, self.overlap, self.batch_size = tile, overlap, batch_size
        if isinstance(partitioner, str):
            from ratcli.regions import make_partitioner

            partitioner = None if partitioner == "none" else make_partitioner(partitioner)
        self.partitioner = partitioner
        self.on_tiles = on_tiles
        self.fixed_task = None if task == "auto" else self._check_task(get_task(task))
        self._restorers: dict[tuple[str, str], tuple[Restorer, dict]] = {}
        self._checkpoints: dict = {}

    def task_for(self, image: Image | None, where: str | Path) -> TaskSpec:
        """The task for one input (`image` None for a slide, `where` names it in errors):
        --task, else the weights' own task, else by modality (CT -> ct, PT -> pet) or,
        for sr, by scale."""
        if self.fixed_task is not None:
            return self.fixed_task
        ckpt = self._checkpoint(self.weights) if self.weights is not None else None
        if ckpt is not None and ckpt.meta.get("task") in TASKS:
            return self._check_task(TASKS[ckpt.meta["task"]], ckpt.path)
        if self.mode is Mode.SR:
            return TASKS[f"sr-x{self.scale or 2}"]
        if image is None:
            raise InputFormatError(f"{where}: whole-slide images can only be super-resolved "
                                   "(rat sr)")
        name = _BY_MODALITY.get(image.modality)
        if name is None:
            raise InputFormatError(f"{where}: cannot tell the task from modality "
                                   f"{image.modality!r}; pass --task ct or --task pet")
        return TASKS[name]

    def restorer(self, task: TaskSpec) -> tuple[Restorer, dict]:
        """(Restorer, provenance) for `task`, built once per weights file and task."""
        ref = str(self.weights) if self.weights is not None else task.weights
        key = (ref, task.name)
        if key not in self._restorers:
            ckpt = self._checkpoint(ref)
            _check_checkpoint(ckpt, task)
            model = ckpt.build(self.device)
            restorer = Restorer(model, task, tile=self.tile, overlap=self.overlap,
                                batch_size=self.batch_size, device=self.device,
                                partitioner=self.partitioner, on_progress=self.on_tiles)
            provenance = {"task": task.name, "weights": Path(ref).name if _is_path(ref)
                          else ref, "weights_sha256": ckpt.sha256}
            self._restorers[key] = (restorer, provenance)
        return self._restorers[key]

    def _checkpoint(self, ref: str | Path):
        from ratcli.models import load_checkpoint
        from ratcli.weights import resolve_weights

        ref = str(ref)
        if ref not in self._checkpoints:
            self._checkpoints[ref] = load_checkpoint(resolve_weights(ref))
        return self._checkpoints[ref]

    def _check_task(self, task: TaskSpec, weights: Path | None = None) -> TaskSpec:
        kind = "sr" if self.mode is Mode.SR else "denoise"
        where = f"{weights}: weights for" if weights else "--task"
        if task.kind != kind:
            raise UsageError(f"{where} {task.name} cannot be used with `rat {kind}`")
        if self.mode is Mode.SR and self.scale not in (None, task.scale):
            raise UsageError(f"{where} {task.name} upsamples x{task.scale}, not x{self.scale}")
        return task


def restore_many(
    inputs: Iterable[str | Path],
    output: str | Path,
    *,
    overwrite: bool = False,
    raise_errors: bool = False,
    on_start: Callable[[Source, Path], None] | None = None,
    **session_options,
) -> Iterator[RestoreResult]:
    """Restore every input below `inputs` into `output`; one RestoreResult per input.

    inputs: files or folders (searched recursively; DICOM series grouped).
    output: a folder whose tree mirrors each input folder's tree, or, for one input
        file, the output file itself when it has an image suffix.
    overwrite: replace existing outputs (inputs are never overwritten).
    raise_errors: re-raise a per-input failure instead of recording it (--debug).
    on_start: called with (source, output path) before each input.
    session_options: keyword arguments of `Session` (mode, task, scale, weights, ...).
    Raises UsageError / WeightsNotFoundError / CheckpointError for run-wide problems.
    """
    session = Session(**session_options)
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise UsageError("no inputs given")
    as_file = _single_file_output(inputs, Path(output))
    planned: dict[Path, str] = {}
    for item in inputs:
        try:
            sources = find_inputs(item)
        except RatError as exc:
            if raise_errors:
                raise
            yield RestoreResult(str(item), None, "error", 0.0, error=str(exc))
            continue
        for source in sources:
            out = Path(output) if as_file else output_path_for(source, output)
            yield _run_one(session, source, out, planned, overwrite=overwrite,
                           raise_errors=raise_errors, on_start=on_start)


def restore_path(input: str | Path, output: str | Path, *, overwrite: bool = False,
                 **session_options) -> list[RestoreResult]:
    """Restore one path (file, series folder or folder tree); raise on the first error."""
    return list(restore_many([input], output, overwrite=overwrite, raise_errors=True,
                             **session_options))


def restore(image: Image, **session_options) -> Image:
    """Restore an in-memory Image (notebooks); `session_options` as for Session."""
    session = Session(**session_options)
    task = session.task_for(image, image.source or "image")
    restorer, _ = session.restorer(task)
    return restorer.restore(image)


def _run_one(session: Session, source: Source, out: Path, planned: dict[Path, str], *,
             overwrite: bool, raise_errors: bool,
             on_start: Callable[[Source, Path], None] | None) -> RestoreResult:
    """Restore one source into `out`; RatErrors about this input become an error record."""
    t0 = time.perf_counter()
    task_name = None
    if on_start is not None:
        on_start(source, out)
    try:
        key = out.resolve()
        if key in planned:
            raise OutputExistsError(f"{out}: already the output of {planned[key]} in this run")
        planned[key] = str(source.path)
        task_name = _restore_source(session, source, out, overwrite=overwrite).name
    except _RUN_WIDE:
        raise  # the whole run is wrong, not this input
    except RatError as exc:
        if raise_errors:
            raise
        return RestoreResult(str(source.path), str(out), "error",
                             round(time.perf_counter() - t0, 3), task_name, str(exc))
    except Exception as exc:
        if raise_errors:
            raise
        msg = f"{source.path}: internal error {exc.__class__.__name__}: {exc}"
        return RestoreResult(str(source.path), str(out), "error",
                             round(time.perf_counter() - t0, 3), task_name,
                             " ".join(msg.split()))
    return RestoreResult(str(source.path), str(out), "ok",
                         round(time.perf_counter() - t0, 3), task_name)


def _restore_source(session: Session, source: Source, out: Path, *, overwrite: bool
                    ) -> TaskSpec:
    """Read, restore and write one input; returns the task used."""
    _refuse_existing(out, overwrite, inputs=[source.path, *source.files])
    if source.kind == "slide":
        from ratcli.inference.slide import restore_slide
        from ratcli.io.provenance import describe_provenance

        task = session.task_for(None, source.path)
        restorer, provenance = session.restorer(task)
        with atomic_output(out, overwrite=overwrite, inputs=[source.path]) as tmp:
            restore_slide(source.path, tmp, restorer,
                          description=describe_provenance(provenance))
        return task
    image = read(source)
    task = session.task_for(image, source.path)
    restorer, provenance = session.restorer(task)
    restored = restorer.restore(image)
    write(restored, out, overwrite=overwrite, provenance=provenance)
    return task


def _refuse_existing(out: Path, overwrite: bool, inputs: list[Path]) -> None:
    """Fail before any work (not after minutes of inference) when the output exists, is
    an input, or its folder cannot be made; the writer checks again when it writes."""
    check_not_input(out, inputs)
    if not overwrite and (out.exists() or out.is_symlink()):
        raise OutputExistsError(f"{out}: output exists (use --overwrite to replace it)")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise OutputNotWritableError(f"{out}: cannot write in {folder}")


def _check_checkpoint(ckpt, task: TaskSpec) -> None:
    cfg = ckpt.config
    if cfg.in_channels != task.channels or cfg.out_channels != task.channels:
        raise CheckpointError(f"{ckpt.path}: model has {cfg.in_channels} input channels; "
                              f"task {task.name} needs {task.channels}")
    if cfg.scale != task.scale:
        raise CheckpointError(f"{ckpt.path}: model upsamples x{cfg.scale}; task {task.name} "
                              f"needs x{task.scale}")
    meta_task = ckpt.meta.get("task")
    if meta_task and meta_task != task.name:
        raise CheckpointError(f"{ckpt.path}: weights were trained for task {meta_task}, "
                              f"not {task.name}")


def _single_file_output(inputs: list[Path], output: Path) -> bool:
    """True when `output` names a file: one input that is a file, and an image suffix."""
    return (len(inputs) == 1 and inputs[0].is_file() and not output.is_dir()
            and output.name.lower().endswith(_FILE_SUFFIXES))


def _is_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.endswith((".pt", ".pth"))
