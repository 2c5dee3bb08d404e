"""Plain-Python entry points shared by the CLI and notebooks.

    for result in restore_many(["scans/"], "out/", mode="denoise", weights="ct.pt"):
        print(result.to_dict())

`restore_many` plans every input (files, folders searched recursively, DICOM series
however passed) with `ratcli.batch`, checks all outputs before the first model runs,
then restores each input and yields one `RestoreResult` per input or skipped object, so
one bad file does not stop the others. `restore_path` does one input; `restore` works on
an in-memory Image. Problems that concern the whole run (bad options, unusable outputs,
missing or unusable weights) raise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

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
from ratcli.errors import InputFormatError, TaskMismatchError, UsageError
from ratcli.inference import Restorer, resolve_device
from ratcli.inference.restorer import ProgressFn
from ratcli.io import Image, Source, check_geometry_fits, read, streams, write
from ratcli.io.checks import max_pixels_limit
from ratcli.io.formats import all_formats, file_outputs
from ratcli.io.inputs import for_writer
from ratcli.joblog import JobLog
from ratcli.options import check_tiling
from ratcli.regions import Partitioner, make_partitioner
from ratcli.shard import Shard
from ratcli.tasks import TASKS, TaskSpec, get_task, task_for_modality, task_from_values

__all__ = ["Mode", "RestoreResult", "Session", "restore_many", "restore_path", "restore"]


class Mode(StrEnum):
    """The command: denoise (scale 1) or sr (scale 2 or 4)."""

    DENOISE = "denoise"
    SR = "sr"


@dataclass
class RestoreResult(Result):
    """One input's outcome (see batch.Result) plus the task used; `note` says which task
    `--task auto` picked from the values, or why an object was skipped."""

    task: str | None = None


class Session:
    """Models, weights and settings for one run, loaded once and reused per input.

    mode: Mode; task: a TASKS name or "auto"; scale: SR factor (sr mode; None = from
    the task or the weights); weights: a manifest name or a checkpoint path (None = the
    task's default name); partitioner: a Partitioner or a `make_partitioner` method
    ("auto", "sam", "classical", "none" or a label-map path; sam_checkpoint and cache go
    to it); threads: CPU threads for torch (None: OMP_NUM_THREADS, else every CPU);
    max_pixels: the largest image io.read decodes (None: RAT_MAX_PIXELS, else
    io.checks.DEFAULT_MAX_PIXELS; 0: no limit); raw: skip the task's output guard
    (ratcli.inference.guards) and keep the network's output as is; local_rank: the
    GPU under torchrun (LOCAL_RANK) for device auto or cuda; noise: the inputs' noise
    std in their units, told to noise-aware weights (RATConfig.noise_ref; None: each
    slice's is estimated; other weights refuse it); the rest go to `Restorer`.
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
        overlap: float | None = None,
        batch_size: int | None = None,
        partitioner: Partitioner | str = "auto",
        sam_checkpoint: str | Path | None = None,
        cache: bool = True,
        max_pixels: int | None = None,
        threads: int | None = None,
        raw: bool = False,
        on_tiles: ProgressFn | None = None,
        local_rank: int | None = None,
        noise: float | None = None,
    ) -> None:
        self.mode = Mode(mode)
        self.scale = scale
        self.weights = weights
        # UsageError now, not per input
        self.device = resolve_device(device, local_rank=local_rank)
        check_tiling(tile, overlap, batch_size)
        max_pixels_limit(max_pixels)  # a negative or malformed limit: now, not per input
        if self.mode is Mode.SR and scale not in (None, 2, 4):
            raise UsageError(f"--scale {scale}: must be 2 or 4")
        self.tile, self.overlap, self.batch_size = tile, overlap, batch_size
        if isinstance(partitioner, str):
            partitioner = make_partitioner(partitioner, sam_checkpoint=sam_checkpoint,
                                           cache=cache)
        self.partitioner = partitioner
        self.max_pixels = max_pixels
        self.raw = raw
        self.noise = noise
        set_threads(threads)
        self.on_tiles = on_tiles
        self.fixed_task = None if task == "auto" else self._check_task(get_task(task))
        self._restorers: dict[tuple[str, str], tuple[Restorer, dict]] = {}
        self._checkpoints: dict = {}

    def task_for(self, image: Image | None, where: str | Path) -> TaskSpec:
        """The task for one input (`image` None for a slide, `where` names it in errors);
        see pick_task."""
        return self.pick_task(image, where)[0]

    def pick_task(self, image: Image | None, where: str | Path) -> tuple[TaskSpec, str | None]:
        """(task, note) for one input: --task, else the weights' own task, else by
        modality (CT -> ct, PT -> pet) or, for sr, by scale; for images without a
        modality (NIfTI, PNG/TIFF) from their values when they say it plainly, with a
        note naming the pick. Raises InputFormatError when it cannot tell."""
        fixed = self._fixed_or_weights_task()
        if fixed is not None:
            return fixed, None
        if self.mode is Mode.SR:
            return TASKS[f"sr-x{self.scale or 2}"], None
        if image is None:
            raise InputFormatError(f"{where}: whole-slide images can only be super-resolved "
                                   "(rat sr)")
        task = task_for_modality(image.modality)
        if task is not None:
            return task, None
        why = f"modality {image.modality!r}"
        if image.modality == "OT":
            task, reason = task_from_values(image.array)
            if task is not None:
                return task, f"--task auto picked {task.name}: {reason}"
            why += f" ({reason})"
        raise InputFormatError(f"{where}: cannot tell the task from {why}; pass --task ct "
                               "or --task pet")

    def skip_reason(self, source: Source) -> str | None:
        """Why a DICOM source is not for this run (its modality is not the task's), or
        None. Other inputs carry no modality and are never skipped here."""
        if source.kind != "dicom" or source.modality in (None, "OT"):
            return None
        task = self._fixed_or_weights_task()
        if task is None and self.mode is Mode.SR:
            task = TASKS[f"sr-x{self.scale or 2}"]
        if task is None:
            if task_for_modality(source.modality) is None:
                return f"a {source.modality} image; rat has no denoising task for it"
            return None
        if source.modality != task.modality:
            return f"a {source.modality} image; task {task.name} restores {task.modality}"
        return None

    def restorer(self, task: TaskSpec) -> tuple[Restorer, dict]:
        """(Restorer, provenance) for `task`, built once per weights file and task."""
        ref = str(self.weights) if self.weights is not None else task.weights
        key = (ref, task.name)
        if key not in self._restorers:
            ckpt = self._checkpoint(ref)
            task.check_weights(ckpt)
            model = ckpt.build(self.device)
            if self.noise is not None and not ckpt.config.noise_ref:
                raise UsageError(f"--noise: weights {ref} are not noise-aware; they "
                                 "estimate nothing and take no noise level")
            partitioner = self._partitioner_for(task, ckpt, ref)
            restorer = Restorer(model, task, tile=self.tile, overlap=self.overlap,
                                batch_size=self.batch_size, device=self.device,
                                partitioner=partitioner, guard=not self.raw,
                                on_progress=self.on_tiles)
            provenance = {"task": task.name, "weights": Path(ref).name if _is_path(ref)
                          else ref, "weights_sha256": ckpt.sha256,
                          "guard": "none" if self.raw else task.guard or "none"}
            self._restorers[key] = (restorer, provenance)
        return self._restorers[key]

    def _partitioner_for(self, task: TaskSpec, ckpt, ref: str) -> Partitioner:
        """The region partitioner for this model (ratcli.regions.for_model: "auto" runs
        a model with the partitioner it was trained with); a mismatch warns once, through
        the session partitioner's `fallback` line."""
        from ratcli.regions import for_model

        name = Path(ref).name if _is_path(ref) else ref
        part, warning = for_model(self.partitioner, task, ckpt.meta.get("regions"),
                                  weights=name)
        if getattr(self.partitioner, "method", None) == "auto" and \
                ckpt.meta.get("regions") == part.name:
            self.partitioner.fallback = None  # the model's own partitioner: nothing to say
        if warning and warning not in (self.partitioner.fallback or ""):
            self.partitioner.fallback = "; ".join(
                n for n in (self.partitioner.fallback, warning) if n)
        return part

    def _fixed_or_weights_task(self) -> TaskSpec | None:
        if self.fixed_task is not None:
            return self.fixed_task
        ckpt = self._checkpoint(self.weights) if self.weights is not None else None
        if ckpt is not None and ckpt.meta.get("task") in TASKS:
            return self._check_task(TASKS[ckpt.meta["task"]], ckpt.path)
        return None

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
            raise TaskMismatchError(f"{where} {task.name} cannot be used with `rat {kind}`")
        if self.mode is Mode.SR and self.scale not in (None, task.scale):
            raise TaskMismatchError(f"{where} {task.name} upsamples x{task.scale}, "
                                    f"not x{self.scale}")
        return task


def restore_many(
    inputs: Iterable[str | Path],
    output: str | Path,
    *,
    overwrite: bool = False,
    raise_errors: bool = False,
    on_start: OnStart | None = None,
    shard: Shard | None = None,
    skip_existing: bool = False,
    log: str | Path | None = None,
    on_plan: Callable[[Plan], None] | None = None,
    **session_options,
) -> Iterator[RestoreResult]:
    """Restore every input below `inputs` into `output`; one RestoreResult per input.

    inputs: files or folders (searched recursively); DICOM files are grouped into
        series by SeriesInstanceUID however they are passed.
    output: a folder (see ratcli.batch for the naming rules: one folder or series input
        writes straight into it, several inputs and trees are mirrored), or, for one
        input, the output file itself when it has an image suffix.
    overwrite: replace existing outputs (inputs are never overwritten).
    raise_errors: re-raise a per-input failure instead of recording it (--debug).
    on_start: called with (source, output path, index from 1, number of inputs) before
        each input.
    shard: restore only this share of the planned inputs (ratcli.shard); under torchrun
        its local_rank picks the GPU for device auto or cuda.
    skip_existing: inputs whose outputs are complete are not restored ("exists").
    log: append each record, with shard, host and device, to this JSON-lines file
        (ratcli.joblog; `{shard}` in it: the shard's number).
    on_plan: called with the plan (plan.share: this shard's part) before the first input.
    session_options: keyword arguments of `Session` (mode, task, scale, weights, ...).
    Objects that are not restorable images of the task (localizers, dose reports,
    screenshots, other modalities) give a "skipped" record with the reason in `note`.
    Raises before any inference: UsageError (options, outputs that cannot be written as
    asked), OutputExistsError, OutputNotWritableError, WeightsNotFoundError,
    CheckpointError.
    """
    if shard is not None and shard.local_rank is not None:
        session_options.setdefault("local_rank", shard.local_rank)
    session = Session(**session_options)
    plan = plan_batch(inputs, output, _output_rule(), overwrite=overwrite,
                      skip=session.skip_reason, raise_errors=raise_errors, shard=shard,
                      skip_existing=skip_existing)
    joblog = None if log is None else JobLog(log, shard=shard, device=str(session.device),
                                             command=session.mode.value)
    if on_plan is not None:
        on_plan(plan)

    def work(job: Job, info: dict) -> None:
        task, note = _restore_source(session, job.source, job.output, overwrite=overwrite)
        info.update(task=task.name, note=note)

    results = run_batch(plan, work, result_type=RestoreResult, raise_errors=raise_errors,
                        on_start=on_start)
    yield from results if joblog is None else joblog.record(results)


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
    return restorer.restore(image, noise=session.noise)


def _output_rule() -> OutputRule:
    """Forms a single output file may take, by input kind (else: an output folder): what
    the format table says each kind is written as (`ratcli.io.formats.file_outputs`)."""
    return OutputRule(file_suffixes={f.kind: file_outputs(f.kind) for f in all_formats()})


def _restore_source(session: Session, source: Source, out: Path, *, overwrite: bool
                    ) -> tuple[TaskSpec, str | None]:
    """Read, restore and write one input; returns (task used, note)."""
    if streams(source):  # whole slides: streamed tile by tile, never read whole
        from ratcli.inference.slide import restore_stream

        task = session.task_for(None, source.path)
        restorer, provenance = session.restorer(task)
        report = restore_stream(source, out, restorer, overwrite=overwrite,
                                provenance=provenance)
        h, w = report.levels[0] if report.levels else (0, 0)
        what = "slide" if source.kind == "slide" else "image (streamed)"
        return task, (f"{what} {w}x{h} px, {len(report.levels)} levels; chunks: "
                      f"{report.chunks_model} by the model, {report.chunks_background} "
                      f"background (bicubic); tissue {report.tissue_fraction:.0%}")
    image = read(source, max_pixels=session.max_pixels)
    check_geometry_fits(image, out)  # before the model runs, not after
    task, note = session.pick_task(image, source.path)
    restorer, provenance = session.restorer(task)
    restored = restorer.restore(image, noise=session.noise)
    write(for_writer(restored, source), out, overwrite=overwrite, provenance=provenance)
    return task, note


def _is_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.endswith((".pt", ".pth"))
