"""`rat denoise` and `rat sr`: restore files, folders, or paths listed on stdin.

Each command parses its options and makes one library call, `ratcli.api.restore_many`,
inside `guard()`. Results go to stdout (one line per input, or one JSON line with
--json); errors and progress go to stderr. Exit 0 when every input succeeded, 1 when
some failed (the others are still processed), 2 for usage errors.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path

import typer

from ratcli.api import Mode, RestoreResult, restore_many
from ratcli.cli.app import app, console, emit_json, guard, progress, state
from ratcli.errors import UsageError
from ratcli.inference.device import DeviceChoice
from ratcli.regions import make_partitioner
from ratcli.tasks import TASKS

__all__ = ["denoise", "sr"]

TaskChoice = StrEnum("TaskChoice", {"auto": "auto", **{n: n for n in TASKS}})


class ScaleChoice(StrEnum):
    X2 = "2"
    X4 = "4"


_INPUTS = typer.Argument(..., help="Files or folders (searched recursively); - reads one "
                         "path per line from stdin.", show_default=False)
_OUTPUT = typer.Option(..., "-o", "--output", help="Output folder (mirrors each input "
                       "folder's tree), or the output file for a single input file.")
_WEIGHTS = typer.Option(None, "--weights", help="Checkpoint: a manifest name or a .pt path "
                        "(default: the task's weights, if installed).")
_DEVICE = typer.Option(DeviceChoice.AUTO, "--device", help="Compute device; auto = cuda, "
                       "else mps, else cpu.")
_TILE = typer.Option(None, "--tile", help="Tile edge in input pixels (default: the task's).")
_OVERLAP = typer.Option(0.25, "--overlap", help="Fraction of a tile shared with each "
                        "neighbour (0-0.5); seams are blended with a cosine ramp.")
_BATCH = typer.Option(4, "--batch-size", help="Tiles per forward pass.")
_REGIONS = typer.Option("auto", "--regions", help="Region maps for region attention: auto "
                        "(sam when a SAM checkpoint is configured, else classical), sam, "
                        "classical, none (one region per image), or a label-map file.")
_SAM = typer.Option(None, "--sam-checkpoint", help="SAM checkpoint: a path or a manifest "
                    "name (default: RAT_SAM_CHECKPOINT, else a sam-vit-* file in the weights "
                    "dirs).")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace existing outputs.")
_JSON = typer.Option(False, "--json", help="One JSON line per input on stdout: input, "
                     "output, status, seconds, error.")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress and no per-file lines; "
                      "errors are still shown.")


@app.command()
def denoise(
    inputs: list[str] = _INPUTS,
    output: Path = _OUTPUT,
    task: TaskChoice = typer.Option(TaskChoice.auto, "--task", help="Task; auto = from the "
                                    "weights, else the DICOM Modality (CT -> ct, PT -> pet)."),
    weights: str | None = _WEIGHTS,
    device: DeviceChoice = _DEVICE,
    tile: int | None = _TILE,
    overlap: float = _OVERLAP,
    batch_size: int = _BATCH,
    regions: str = _REGIONS,
    sam_checkpoint: str | None = _SAM,
    overwrite: bool = _OVERWRITE,
    as_json: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """Denoise low-dose CT or low-count PET (DICOM series, NIfTI, PNG/TIFF)."""
    _run(inputs, output, as_json=as_json, quiet=quiet, overwrite=overwrite, mode=Mode.DENOISE,
         task=task.value, weights=weights, device=device.value, tile=tile, overlap=overlap,
         batch_size=batch_size, regions=regions, sam_checkpoint=sam_checkpoint)


@app.command()
def sr(
    inputs: list[str] = _INPUTS,
    output: Path = _OUTPUT,
    scale: ScaleChoice = typer.Option(ScaleChoice.X2, "--scale", help="Upsampling factor."),
    task: TaskChoice = typer.Option(TaskChoice.auto, "--task", help="Task; auto = from the "
                                    "weights, else sr-x<scale>."),
    weights: str | None = _WEIGHTS,
    device: DeviceChoice = _DEVICE,
    tile: int | None = _TILE,
    overlap: float = _OVERLAP,
    batch_size: int = _BATCH,
    regions: str = _REGIONS,
    sam_checkpoint: str | None = _SAM,
    overwrite: bool = _OVERWRITE,
    as_json: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """Super-resolve pathology images and whole slides (output: pyramidal tiled TIFF)."""
    _run(inputs, output, as_json=as_json, quiet=quiet, overwrite=overwrite, mode=Mode.SR,
         scale=int(scale.value), task=task.value, weights=weights, device=device.value,
         tile=tile, overlap=overlap, batch_size=batch_size, regions=regions,
         sam_checkpoint=sam_checkpoint)


def _run(inputs: list[str], output: Path, *, as_json: bool, quiet: bool, overwrite: bool,
         regions: str, sam_checkpoint: str | None, **options) -> None:
    failed = 0
    if not state.debug:
        # tifffile logs warnings about corrupt files; rat reports them as one error line
        logging.getLogger("tifffile").setLevel(logging.ERROR)
    with guard():
        paths = _expand_stdin(inputs)
        partitioner = make_partitioner(regions, sam_checkpoint=sam_checkpoint)
        warning = partitioner.fallback

        def on_tiles(done: int, total: int) -> None:
            nonlocal warning
            if warning:  # once, when an input was read and is really being restored
                console.print(f"warning: {warning}", markup=False, highlight=False,
                              soft_wrap=True)
                warning = None
            bar.update(tid, completed=done, total=total)

        with progress(disable=quiet) as bar:
            tid = bar.add_task("", total=None)
            results = restore_many(
                paths, output, overwrite=overwrite, raise_errors=state.debug,
                partitioner=partitioner,
                on_start=lambda src, out, *_: bar.update(tid, description=src.path.name,
                                                     completed=0, total=None),
                on_tiles=on_tiles,
                **options,
            )
            for result in results:
                failed += result.status == "error"  # skipped objects are not failures
                _report(result, as_json=as_json, quiet=quiet)
    if failed:
        raise typer.Exit(1)


def _expand_stdin(inputs: list[str]) -> list[str]:
    """Replace '-' by the non-empty lines of stdin."""
    if "-" not in inputs:
        return inputs
    listed = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
    if not listed and len(inputs) == 1:
        raise UsageError("-: no input paths on stdin")
    out: list[str] = []
    for item in inputs:
        out.extend(listed if item == "-" else [item])
    return out


def _report(result: RestoreResult, *, as_json: bool, quiet: bool) -> None:
    if result.status == "error":
        console.print(f"error: {result.error}", style="red", markup=False, highlight=False,
                      soft_wrap=True)
    elif result.note and not quiet:  # a skipped object, or the task --task auto picked
        console.print(f"note: {result.input}: {result.note}", markup=False, highlight=False,
                      soft_wrap=True)
    if as_json:
        emit_json(result.to_dict())
    elif result.status == "ok" and not quiet:
        typer.echo(f"{result.input} -> {result.output} ({result.seconds:.1f} s)")
