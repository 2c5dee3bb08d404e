"""`rat denoise` and `rat sr`: restore files, folders, or paths listed on stdin.

Each command parses its options and makes one library call, `ratcli.api.restore_many`,
inside `guard()`; torch is imported only then. Results go to stdout (one line per
input, or one JSON line with --json); errors, notes and progress go to stderr. Exit 0
when every input succeeded or was skipped, 1 when some failed (the others are still
processed), 2 for usage errors, 128+N when stopped by signal N.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from ratcli.cli.app import (
    TASK_NAMES,
    DeviceChoice,
    app,
    device_option,
    emit_json,
    error_line,
    flag,
    guard,
    json_option,
    note_line,
    progress,
    quiet_option,
    result_line,
    state,
    warn,
)
from ratcli.cli.cluster import (
    cluster_options,
    finish_shard,
    log_option,
    shard_option,
    share_printer,
    skip_existing_option,
)
from ratcli.errors import UsageError

__all__ = ["denoise", "sr"]

TaskChoice = StrEnum("TaskChoice", {"auto": "auto", **{n: n for n in TASK_NAMES}})


class ScaleChoice(StrEnum):
    X2 = "2"
    X4 = "4"


_RULES = """
Outputs (-o is required): one input file -> -o is the output file when it has an image
suffix, else a folder; one folder -> its restored files go straight into -o (a DICOM
series folder becomes one derived series in -o); several inputs or a stdin list -> -o
mirrors each input under its own name. Outputs are planned and checked before the first
model runs; inputs are never overwritten and -o may not lie inside an input folder.
Objects that are not restorable images (localizers, dose reports, screenshots, other
modalities) are skipped with a note and do not fail the run.
"""

_INPUTS = typer.Argument(..., metavar="INPUT...", help="Files or folders (searched "
                         "recursively); - reads one "
                         "path per line from stdin (# starts a comment line).",
                         show_default=False)
_OUTPUT = typer.Option(..., "-o", "--output", help="Output file (one input file) or "
                       "folder; see the rules below.", show_default=False)
_WEIGHTS = typer.Option(None, "--weights", help="Checkpoint: a manifest name (see `rat "
                        "weights list`) or a .pt path (default: the task's weights).")
_TILE = typer.Option(None, "--tile", help="Tile edge in input pixels (default: the task's).")
_OVERLAP = typer.Option(None, "--overlap", help="Fraction of a tile shared with each "
                        "neighbour (0-0.5; default: the task's); seams are blended with a "
                        "cosine ramp.")
_BATCH = typer.Option(None, "--batch-size", help="Tiles per forward pass (default: automatic; "
                      "on CPU up to 256x256 output pixels per pass, on a GPU 4 tiles).")
_REGIONS = typer.Option("auto", "--regions", help="Region maps for region attention: auto "
                        "(the partitioner the model was trained with; for a model that "
                        "records none: litemedsam when installed, else sam when a checkpoint "
                        "is configured, else classical), litemedsam, sam, classical, none "
                        "(one region per image), or a label-map file.")
_SAM = typer.Option(None, "--sam-checkpoint", help="SAM checkpoint: a path or a manifest "
                    "name (default: RAT_SAM_CHECKPOINT, else a sam-vit-* file in the weights "
                    "dirs).")
_NO_CACHE = flag("--no-cache", "Do not read or write the region-map cache (RAT_CACHE).")
_MAX_PIXELS = typer.Option(None, "--max-pixels", help="Refuse images with more pixels than "
                           "this (all slices together; 0 = no limit), before decoding "
                           "(default: RAT_MAX_PIXELS, else 536,870,912).")
_THREADS = typer.Option(None, "--threads", help="CPU threads for the forward pass "
                        "(default: OMP_NUM_THREADS when set, else every core).")
_OVERWRITE = flag("--overwrite", "Replace existing outputs (never an input).")
_RAW = flag("--raw", "Write the network's output as is, without the task's output guard "
            "(PET: hot and cold spots the network flattened are put back; SR: output "
            "clamped to the input's local range).")
_JSON = json_option("One JSON line per input on stdout: input, output, status (ok, error, "
                    "skipped, exists), seconds, task, note, error.")
_TASK_HELP = ("Task; auto = from the weights, else the DICOM Modality (CT -> ct, PT -> "
              "pet), else the values when they say it plainly (HU -> ct, activity -> pet).")


@app.command(epilog=_RULES)
def denoise(
    inputs: list[str] = _INPUTS,
    output: Path = _OUTPUT,
    task: TaskChoice = typer.Option(TaskChoice.auto, "--task", help=_TASK_HELP),
    weights: str | None = _WEIGHTS,
    device: DeviceChoice = device_option(),
    tile: int | None = _TILE,
    overlap: float | None = _OVERLAP,
    batch_size: int | None = _BATCH,
    regions: str = _REGIONS,
    sam_checkpoint: str | None = _SAM,
    no_cache: bool = _NO_CACHE,
    max_pixels: int | None = _MAX_PIXELS,
    threads: int | None = _THREADS,
    overwrite: bool = _OVERWRITE,
    shard: str | None = shard_option(),
    skip_existing: bool = skip_existing_option(),
    log: Path | None = log_option(),
    raw: bool = _RAW,
    noise: float | None = typer.Option(None, "--noise", help="Noise std of the inputs in "
                                       "their units (HU for CT, activity for PET), for "
                                       "noise-aware weights only (default: estimated per "
                                       "slice from the input)."),
    as_json: bool = _JSON,
    quiet: bool = quiet_option(),
) -> None:
    """Denoise low-dose CT or low-count PET (DICOM series, NIfTI, PNG/TIFF)."""
    _run(inputs, output, as_json=as_json, quiet=quiet, overwrite=overwrite, mode="denoise",
         task=task.value, weights=weights, device=device.value, tile=tile, overlap=overlap,
         batch_size=batch_size, regions=regions, sam_checkpoint=sam_checkpoint,
         no_cache=no_cache, max_pixels=max_pixels, threads=threads, raw=raw,
         shard=shard, skip_existing=skip_existing, log=log, noise=noise)


@app.command(epilog=_RULES)
def sr(
    inputs: list[str] = _INPUTS,
    output: Path = _OUTPUT,
    scale: ScaleChoice = typer.Option(ScaleChoice.X2, "--scale", help="Upsampling factor."),
    task: TaskChoice = typer.Option(TaskChoice.auto, "--task", help="Task; auto = from the "
                                    "weights, else sr-x<scale>."),
    weights: str | None = _WEIGHTS,
    device: DeviceChoice = device_option(),
    tile: int | None = _TILE,
    overlap: float | None = _OVERLAP,
    batch_size: int | None = _BATCH,
    regions: str = _REGIONS,
    sam_checkpoint: str | None = _SAM,
    no_cache: bool = _NO_CACHE,
    max_pixels: int | None = _MAX_PIXELS,
    threads: int | None = _THREADS,
    overwrite: bool = _OVERWRITE,
    shard: str | None = shard_option(),
    skip_existing: bool = skip_existing_option(),
    log: Path | None = log_option(),
    raw: bool = _RAW,
    as_json: bool = _JSON,
    quiet: bool = quiet_option(),
) -> None:
    """Super-resolve pathology images and whole slides (output: pyramidal tiled TIFF)."""
    _run(inputs, output, as_json=as_json, quiet=quiet, overwrite=overwrite, mode="sr",
         scale=int(scale.value), task=task.value, weights=weights, device=device.value,
         tile=tile, overlap=overlap, batch_size=batch_size, regions=regions,
         sam_checkpoint=sam_checkpoint, no_cache=no_cache, max_pixels=max_pixels,
         threads=threads, raw=raw, shard=shard, skip_existing=skip_existing, log=log)


def library_limits(max_pixels: int | None, threads: int | None) -> dict[str, int]:
    """`max_pixels=` / `threads=` keywords for the library, only those given (checked
    here, so a bad value is a usage error before torch is imported)."""
    extra: dict[str, int] = {}
    if max_pixels is not None or os.environ.get("RAT_MAX_PIXELS", "").strip():
        from ratcli.io.checks import max_pixels_limit  # the one rule for both; no torch

        max_pixels_limit(max_pixels)
    if max_pixels is not None:
        extra["max_pixels"] = max_pixels
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads {threads}: must be at least 1")
        extra["threads"] = threads
    return extra


def _run(inputs: list[str], output: Path, *, as_json: bool, quiet: bool, overwrite: bool,
         regions: str, sam_checkpoint: str | None, no_cache: bool, max_pixels: int | None,
         threads: int | None, **options: Any) -> None:
    failed = 0
    if not state.debug:
        # tifffile logs warnings about corrupt files; rat reports them as one error line
        logging.getLogger("tifffile").setLevel(logging.ERROR)
    with guard():
        extra = library_limits(max_pixels, threads)
        cluster = cluster_options(options.pop("shard"), options.pop("skip_existing"),
                                  options.pop("log"), reads_stdin="-" in inputs)
        _check_options(options)
        paths = _expand_stdin(inputs)
        if not any(os.path.lexists(p) for p in paths):
            missing_inputs(paths, as_json=as_json)  # no torch for a mistyped path
        # a missing, unknown or tampered checkpoint is refused before any work
        from ratcli.weights import resolve_weights

        for ref in (options.get("weights"), sam_checkpoint):
            if ref is not None:
                resolve_weights(ref)
        refuse_unusable(paths, as_json=as_json)  # no torch for notes.txt either
        state.activity = "loading the model"
        from ratcli.api import restore_many  # torch from here on
        from ratcli.regions.factory import make_partitioner

        partitioner = make_partitioner(regions, sam_checkpoint=sam_checkpoint,
                                       cache=not no_cache)
        warned = quiet
        count = 0

        def on_start(source: Any, out: Path, index: int | None = None,
                     total: int | None = None) -> None:
            nonlocal count
            count = index or count + 1
            of = f"file {count}" + (f" of {total}" if total else "")
            state.activity = f"restoring {source.path} ({of})"
            bar.update(tid, description=f"{of}: {source.path.name}", completed=0, total=None)

        def on_tiles(done: int, total: int) -> None:
            nonlocal warned
            if not warned:  # once, when an input was read and is really being restored
                warned = True  # (read now: the model's own partitioner may change it)
                if note := getattr(partitioner, "fallback", None):
                    warn(note)
            bar.update(tid, completed=done, total=total)

        with progress(disable=quiet) as bar:
            tid = bar.add_task("", total=None)
            results = restore_many(
                paths, output, overwrite=overwrite, raise_errors=state.debug,
                partitioner=partitioner, on_start=on_start, on_tiles=on_tiles,
                on_plan=share_printer(quiet), **cluster, **extra, **options,
            )
            for result in results:
                failed += result.status == "error"
                _report(result, as_json=as_json, quiet=quiet, bar=bar)
        state.activity = "finishing"
        finish_shard(failed=bool(failed))
    if failed:
        raise typer.Exit(1)


def _check_options(options: dict[str, Any]) -> None:
    """The numeric options the library checks too, checked before torch is imported."""
    from ratcli.options import check_tiling

    check_tiling(options["tile"], options["overlap"], options["batch_size"])
    noise = options.get("noise")
    if noise is not None and not (math.isfinite(noise) and noise >= 0):
        raise UsageError(f"--noise {noise}: must be a finite number >= 0")


def refuse_unusable(paths: list[str] | list[Path], *, as_json: bool) -> None:
    """Exit 1 with one error (and JSON record) per input when none can be restored: each
    is missing, or a file of no supported format (sniffed as the batch would, by the
    format table, without torch: `rat denoise notes.txt` answers at once); else return."""
    if any(os.path.lexists(p) for p in paths):
        from ratcli.io.sources import input_problem  # numpy and the format table, no torch

        if not all(input_problem(p) for p in paths):  # stops at the first usable input
            return
        missing_inputs(paths, as_json=as_json, problems=[input_problem(p) for p in paths])
    missing_inputs(paths, as_json=as_json)


def missing_inputs(paths: list[str] | list[Path], *, as_json: bool,
                   problems: list[str | None] | None = None) -> None:
    """Every input is missing (or cannot be restored: `problems`, one message per path):
    one error (and JSON record) each, exit 1."""
    for i, p in enumerate(paths):
        message = (problems[i] if problems else None) or f"{p}: no such file or folder"
        error_line(message)
        if as_json:
            emit_json({"input": str(p), "output": None, "status": "error", "seconds": 0.0,
                       "task": None, "error": message})
    raise typer.Exit(1)


def _expand_stdin(inputs: list[str]) -> list[str]:
    """Replace '-' by the lines of stdin, leaving out empty lines and comments (lines
    starting with '#')."""
    if "-" not in inputs:
        return inputs
    listed = [line.strip() for line in sys.stdin.read().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    if not listed and len(inputs) == 1:
        raise UsageError("-: no input paths on stdin")
    out: list[str] = []
    for item in inputs:
        out.extend(listed if item == "-" else [item])
    return out


def _report(result: Any, *, as_json: bool, quiet: bool, bar: Any) -> None:
    note = getattr(result, "note", None)
    if result.status == "error":
        error_line(str(result.error))
    elif note and not quiet:
        note_line(f"{'skipped' if result.status == 'skipped' else 'note'}: "
                  f"{result.input}: {note}")
    if as_json:
        emit_json(result.to_dict())
    elif result.status == "ok" and not quiet:
        result_line(f"{result.input} -> {result.output} ({result.seconds:.1f} s)", bar)
