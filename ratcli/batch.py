"""The one batch runner behind `rat denoise`, `rat sr` and `rat regions`.

    plan = plan_batch(["scans/"], "out/", rule, overwrite=False, skip=session.skip_reason)
    for result in run_batch(plan, work, result_type=RestoreResult):
        ...

`plan_batch` finds every input, groups DICOM files into series however they were passed,
skips objects that are not restorable images, names every output and checks every
input/output pair (formats, name lengths, clashes, existing outputs, outputs inside
inputs, writable folders) before any model runs: a problem there raises. `run_batch`
then does the work per input and yields one record per input, so one bad file does not
stop the others.

Output naming, in order:
- one source and an output with a file suffix: the output is that file;
- one DICOM series passed as its folder or as its files, for outputs that are series
  folders: the output folder holds the derived series itself
  (`rat denoise ct_series/ -o out/` -> out/IM0001.dcm, ...; junk beside it, such as
  a text file named .dcm, fails on its own and does not change this);
- otherwise `rule.folder_path(source, output)` mirrors the input tree under the output
  folder (a folder input's tree below it; a file input by its name).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ratcli.errors import (
    CheckpointError,
    ChecksumError,
    OutputExistsError,
    OutputNotWritableError,
    RatError,
    UsageError,
    WeightsNotFoundError,
)
from ratcli.io.atomic import check_not_input, check_output_name
from ratcli.io.sources import Source, group_dicom_files, output_path_for, scan_inputs
from ratcli.shard import Shard, Share, select_jobs

__all__ = ["Result", "Job", "OutputRule", "Plan", "OnStart", "plan_batch", "run_batch",
           "RUN_WIDE", "set_threads"]

# (source, output, index from 1, number of inputs to run) before each input
OnStart = Callable[[Source, Path, int, int], None]

# Failures that concern every input of the run: they abort it instead of being recorded.
RUN_WIDE = (UsageError, CheckpointError, ChecksumError, WeightsNotFoundError)


@dataclass
class Result:
    """One input's outcome.

    input, output: paths (output None when none was planned); status: "ok", "error"
    (error: the one-line message), "skipped" (note: why, e.g. a localizer image) or
    "exists" (skip_existing kept a complete output); seconds: wall time; note: anything
    else the user should read (e.g. the task `--task auto` picked).
    """

    input: str
    output: str | None
    status: str
    seconds: float
    error: str | None = None
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Job:
    """One planned unit of work: a source, its output and any further outputs (an
    overlay)."""

    source: Source
    output: Path
    extras: tuple[Path, ...] = ()


@dataclass(frozen=True)
class OutputRule:
    """How a command names its outputs.

    file_suffixes: source kind -> the suffixes a single output file may have for it.
    folder_path: (source, output folder) -> that source's output below the folder.
    extras: (source, planned output, number of sources) -> further outputs to check.
    series_into_folder: a lone DICOM series given directly is written as the output
        folder itself (its output is a folder of files, as for `rat denoise`).
    """

    file_suffixes: Mapping[str, tuple[str, ...]]
    folder_path: Callable[[Source, Path], Path] = output_path_for
    extras: Callable[[Source, Path, int], tuple[Path, ...]] = lambda s, o, n: ()
    series_into_folder: bool = True


@dataclass
class Plan:
    """jobs in order; records: inputs that were not found or were skipped."""

    jobs: list[Job] = field(default_factory=list)
    records: list[Result] = field(default_factory=list)
    share: Share | None = None  # this shard's part (ratcli.shard), or what skip_existing kept


def plan_batch(
    inputs: Iterable[str | Path],
    output: str | Path,
    rule: OutputRule,
    *,
    overwrite: bool = False,
    skip: Callable[[Source], str | None] | None = None,
    raise_errors: bool = False,
    shard: Shard | None = None,
    skip_existing: bool = False,
) -> Plan:
    """Find, skip, name and check everything; see the module docstring.

    skip: a command's own reason to skip a source (e.g. a PET series for --task ct).
    raise_errors: re-raise a missing or unreadable input instead of recording it.
    shard, skip_existing: run this shard's share, jobs whose outputs are complete become
        "exists" records (see ratcli.shard; existing outputs are refused in the share only).
    Raises UsageError (no inputs, an output form that cannot hold the input, two inputs
    with one output, a name too long, an output inside an input), OutputExistsError
    (outputs exist and not `overwrite`), OutputNotWritableError.
    """
    args = [Path(p) for p in inputs]
    if not args:
        raise UsageError("no inputs given")
    out = Path(output)
    plan = Plan()
    sources, direct = _discover(args, plan, raise_errors=raise_errors)
    kept = []
    for src in sources:
        reason = skip(src) if skip is not None else None
        if reason:
            plan.records.append(Result(str(src.path), None, "skipped", 0.0, note=reason))
        else:
            kept.append(src)
    file_suffixes = tuple({s for group in rule.file_suffixes.values() for s in group})
    named_file = out.name.lower().endswith(file_suffixes) and not out.is_dir()
    if named_file and len(kept) > 1:
        raise UsageError(f"{out}: {len(kept)} inputs need an output folder, not a file name")
    for src in kept:
        if named_file:
            target = out
            _check_form(src, out, rule)
        elif rule.series_into_folder and src in direct and _layout(kept) == [src]:
            target = out  # the series' files go straight into the output folder
        else:
            target = rule.folder_path(src, out)
        plan.jobs.append(Job(src, target, rule.extras(src, target, len(kept))))
    every = plan.jobs
    if shard is not None or skip_existing:
        plan.jobs, done, plan.share = select_jobs(every, out, shard=shard,
                                                  skip_existing=skip_existing)
        plan.records = plan.records if shard is None or shard.index == 0 else []
        plan.records += [Result(str(j.source.path), str(j.output), "exists", 0.0) for j in done]
    _check_outputs(every, args, overwrite=overwrite, mine={id(j) for j in plan.jobs})
    return plan


def run_batch(
    plan: Plan,
    work: Callable[[Job, dict], None],
    *,
    result_type: type[Result] = Result,
    raise_errors: bool = False,
    on_start: OnStart | None = None,
) -> Iterator[Result]:
    """Yield plan.records, then run `work(job, info)` per job and yield its record.

    on_start: called before each job with (source, output, index from 1, number of jobs),
        so a caller can show "file N of M".
    work: reads, restores and writes one job; fills `info` with the record's extra fields
        (e.g. task, note), kept for an error record too.
    RatErrors about one input become an "error" record (raise_errors: re-raised), as do
    unexpected exceptions ("internal error ..."); RUN_WIDE errors abort the run.
    """
    for record in plan.records:
        yield result_type(**record.to_dict())
    for index, job in enumerate(plan.jobs, start=1):
        if on_start is not None:
            on_start(job.source, job.output, index, len(plan.jobs))
        info: dict = {}
        t0 = time.perf_counter()
        try:
            _drop_empty_folder(job.output)
            work(job, info)
        except RUN_WIDE:
            raise
        except Exception as exc:
            if raise_errors:
                raise
            msg = str(exc) if isinstance(exc, RatError) else " ".join(
                f"{job.source.path}: internal error {type(exc).__name__}: {exc}".split())
            yield result_type(str(job.source.path), str(job.output), "error",
                              round(time.perf_counter() - t0, 3), error=msg, **info)
            continue
        yield result_type(str(job.source.path), str(job.output), "ok",
                          round(time.perf_counter() - t0, 3), **info)


def set_threads(threads: int | None) -> None:
    """CPU threads of the forward pass: `threads` (--threads) if given, else
    OMP_NUM_THREADS, else every CPU of the process (`inference.device.configure_threads`)."""
    from ratcli.inference.device import configure_threads  # imports torch: only for a run

    configure_threads(threads)


# -- planning steps, in call order ---------------------------------------------------


def _discover(args: list[Path], plan: Plan, *, raise_errors: bool
              ) -> tuple[list[Source], set[Source]]:
    """(sources, the DICOM series given directly: as their folder or as their files).
    Missing or unsupported inputs and skipped objects become records in `plan`, as do
    inputs given twice (any spelling: relative, absolute, ./, a symlink; or a file also
    inside a folder given), which are restored once."""
    sources: list[Source] = []
    direct: set[Source] = set()
    dicom_files: list[Path] = []
    seen: dict[Path, Path] = {}
    for arg in args:
        first = seen.setdefault(arg.resolve(), arg)
        if first is not arg:
            plan.records.append(Result(str(arg), None, "skipped", 0.0,
                                       note=f"given twice (also as {first}); restored once"))
            continue
        try:
            found, skipped = scan_inputs(arg)
        except RatError as exc:
            if raise_errors:
                raise
            plan.records.append(Result(str(arg), None, "error", 0.0, error=str(exc)))
            continue
        plan.records += [Result(str(s.path), None, "skipped", 0.0, note=s.reason)
                         for s in skipped]
        if arg.is_file() and found and found[0].kind == "dicom":
            dicom_files.append(arg)  # grouped with the other file arguments below
            continue
        direct.update(s for s in found if s.kind == "dicom" and s.path == arg)
        sources += found
    if dicom_files:
        series, _ = group_dicom_files(dicom_files)  # skipped ones were recorded above
        direct.update(s for s in series if len(s.files) > 1)  # a series folder
        sources += series
    return _once(sources, plan), direct


def _once(sources: list[Source], plan: Plan) -> list[Source]:
    """`sources` without those whose files all belong to an earlier source (a file named
    and also found in a folder given), each recorded as skipped."""
    owner: dict[Path, Path] = {}
    kept = []
    for src in sources:
        keys = [f.resolve() for f in src.files]
        if keys and all(k in owner for k in keys):
            plan.records.append(Result(str(src.path), None, "skipped", 0.0,
                                       note=f"also an input as part of {owner[keys[0]]}; "
                                            "restored once"))
            continue
        for k in keys:
            owner.setdefault(k, src.path)
        kept.append(src)
    return kept


def _layout(sources: list[Source]) -> list[Source]:
    """The sources that decide the output layout: all but DICOM files whose header
    names no series (unreadable: a text file named .dcm). Those fail on their own when
    read, so a junk file in a series folder does not move the series' output from OUT/
    to OUT/<folder>/: the layout depends on what was asked, not on failures."""
    return [s for s in sources if s.kind != "dicom" or s.series_uid is not None]


def _check_form(src: Source, out: Path, rule: OutputRule) -> None:
    allowed = rule.file_suffixes.get(src.kind, ())
    if src.kind == "dicom" and len(src.files) > 1:
        allowed = tuple(s for s in allowed if s != ".dcm")  # a series needs a folder
    if not out.name.lower().endswith(allowed):
        what = "a DICOM series" if len(src.files) > 1 else f"a {src.kind} input"
        forms = ", ".join(allowed) or "an output folder"
        raise UsageError(f"{out}: {what} ({src.path.name}) cannot be written there; "
                         f"use {forms}" + (" or a folder" if src.kind == "dicom" else ""))


def _check_outputs(jobs: list[Job], args: list[Path], *, overwrite: bool, mine: set[int]
                   ) -> None:
    """Every output path: not too long, not shared, not an input or inside an input
    folder, not existing unless overwrite (jobs whose id is in `mine`), in a folder rat
    can create and write.

    Only a folder given as an input makes its subtree off-limits; files named one by one
    (a series grouped from its files included) make only themselves off-limits, so
    `rat denoise IM0001.dcm IM0002.dcm -o denoised` works inside the series folder."""
    owner: dict[Path, Path] = {}
    folders = [a for a in args if a.is_dir()]
    input_files = {f.resolve() for job in jobs for f in job.source.files}
    existing: list[Path] = []
    writable: dict[Path, bool] = {}
    for job in jobs:
        for path in (job.output, *job.extras):
            check_output_name(path)
            key = path.resolve()
            if key in owner:
                raise UsageError(f"{path}: output of both {owner[key]} and {job.source.path}")
            owner[key] = job.source.path
            if key in input_files:
                raise UsageError(f"{path}: output would overwrite an input")
            check_not_input(path, [*folders, *job.source.files])
            if id(job) in mine and _exists(path):
                existing.append(path)
            folder = _existing_ancestor(path.parent)
            if folder not in writable:
                writable[folder] = folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
            if not writable[folder]:
                raise OutputNotWritableError(f"{path}: cannot write in {folder}")
    if existing and not overwrite:
        more = f"; {len(existing) - 1} more outputs exist" if len(existing) > 1 else ""
        raise OutputExistsError(f"{existing[0]}: output exists (use --overwrite to "
                                f"replace it){more}")


def _exists(path: Path) -> bool:
    """An existing output; an empty folder (made for the output) does not count."""
    if path.is_symlink():
        return True
    return path.exists() and not (path.is_dir() and not any(path.iterdir()))


def _existing_ancestor(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _drop_empty_folder(path: Path) -> None:
    """An empty folder at the output path (`mkdir out` before the run) makes way for
    the output, so that writing it is not refused as existing."""
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        path.rmdir()
