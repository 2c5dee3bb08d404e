"""`rat regions`: write the region maps RAT's region attention uses, and overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ratcli.cli.app import (
    DeviceChoice,
    app,
    device_option,
    emit_json,
    error_line,
    flag,
    guard,
    json_option,
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
from ratcli.cli.restore import library_limits, refuse_unusable


@app.command()
def regions(
    inputs: list[Path] = typer.Argument(..., help="Files or folders (searched recursively).",
                                        show_default=False),
    output: Path = typer.Option(..., "-o", "--output", show_default=False,
                                help="Output folder, or the label file for one input "
                                     "(.nii.gz for volumes, .png/.tif for images)."),
    overlay: Path = typer.Option(None, "--overlay",
                                 help="PNG of region boundaries over the image (a folder "
                                      "for several inputs)."),
    method: str = typer.Option("auto", "--regions",
                               help="litemedsam, sam, classical, none, or a label-map "
                                    "file; auto: litemedsam when installed (the default "
                                    "install), else sam when a SAM checkpoint is found, "
                                    "else classical."),
    sam_checkpoint: str = typer.Option(None, "--sam-checkpoint",
                                       help="SAM checkpoint file or name (sam-vit-b/l/h); "
                                            "default: RAT_SAM_CHECKPOINT or the weights dir."),
    points_per_side: int = typer.Option(None, "--points-per-side",
                                        help="SAM prompt grid (default 32)."),
    task: str = typer.Option("auto", "--task",
                             help="Normalisation before partitioning, as `rat denoise` "
                                  "does (auto: by modality; ct, pet or none)."),
    device: DeviceChoice = device_option("Device for SAM"),
    tile: int = typer.Option(2048, "--tile", help="Larger slices (slides) are partitioned "
                                                  "in tiles of this edge."),
    no_cache: bool = flag("--no-cache", "Do not read or write the region cache (RAT_CACHE)."),
    max_pixels: int | None = typer.Option(None, "--max-pixels", help="Refuse images with "
                                          "more pixels per slice than this, before decoding."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads (default: "
                                       "OMP_NUM_THREADS when set, else every core)."),
    overwrite: bool = flag("--overwrite", "Replace existing outputs."),
    shard: str | None = shard_option(),
    skip_existing: bool = skip_existing_option(),
    log: Path | None = log_option(),
    as_json: bool = json_option("One JSON line per input on stdout."),
    quiet: bool = quiet_option(),
) -> None:
    """Compute region label maps (LiteMedSAM, SAM or the classical partitioner) for each
    input."""
    settings: dict[str, Any] = {"points_per_side": points_per_side}
    if device is not DeviceChoice.AUTO:
        settings["device"] = device.value
    settings = {k: v for k, v in settings.items() if v is not None}
    failed = 0
    with guard():
        extra = library_limits(max_pixels, threads)
        cluster = cluster_options(shard, skip_existing, log)
        refuse_unusable(inputs, as_json=as_json)  # missing or notes.txt: no torch
        state.activity = "loading the partitioner"
        from ratcli.regions import make_partitioner
        from ratcli.regions.run import regions_many

        local_rank = cluster["shard"].local_rank if cluster["shard"] is not None else None
        if local_rank is not None and device in (DeviceChoice.AUTO, DeviceChoice.CUDA):
            from ratcli.inference.device import resolve_device

            settings["device"] = str(resolve_device(device.value, local_rank=local_rank))
        partitioner = make_partitioner(method, sam_checkpoint=sam_checkpoint,
                                       cache=not no_cache, **settings)
        if partitioner.fallback and not quiet:
            warn(partitioner.fallback)
        count = 0

        def on_start(source: Any, out: Path, index: int | None = None,
                     total: int | None = None) -> None:
            nonlocal count
            count = index or count + 1
            of = f"file {count}" + (f" of {total}" if total else "")
            state.activity = f"partitioning {source.path} ({of})"
            bar.update(tid, description=f"{of}: {source.path.name}")

        with progress(disable=quiet) as bar:
            tid = bar.add_task("", total=None)
            for result in regions_many(inputs, output, partitioner=partitioner,
                                       overlay=overlay, task=task, tile=tile,
                                       overwrite=overwrite, raise_errors=state.debug,
                                       on_start=on_start, on_plan=share_printer(quiet),
                                       **cluster, **extra):
                if result.status == "error":
                    failed += 1
                    error_line(str(result.error))
                if as_json:
                    emit_json(result.to_dict())
                elif result.status == "ok" and not quiet:
                    lo, mid, hi = result.regions
                    shown = f" + {result.overlay}" if result.overlay else ""
                    result_line(f"{result.input} -> {result.output}{shown}  regions/slice "
                                f"{lo}-{hi} (median {mid})", bar)
        state.activity = "finishing"
        finish_shard(failed=bool(failed))
    if failed:
        raise typer.Exit(1)
