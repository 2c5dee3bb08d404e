"""`rat regions`: write the region maps RAT's region attention uses, and overlays."""

from __future__ import annotations

from pathlib import Path

import typer

from ratcli.cli.app import app, console, emit_json, guard, state
from ratcli.regions import make_partitioner
from ratcli.regions.run import regions_many


@app.command()
def regions(
    inputs: list[Path] = typer.Argument(..., help="Files or folders (searched recursively)."),
    output: Path = typer.Option(..., "-o", "--output",
                                help="Output folder, or the label file for one input "
                                     "(.nii.gz for volumes, .png/.tif for images)."),
    overlay: Path = typer.Option(None, "--overlay",
                                 help="PNG of region boundaries over the image (a folder "
                                      "for several inputs)."),
    method: str = typer.Option("auto", "--regions",
                               help="sam, classical, none, or a label-map file; auto: sam "
                                    "when a SAM checkpoint is found, else classical."),
    sam_checkpoint: str = typer.Option(None, "--sam-checkpoint",
                                       help="SAM checkpoint file or name (sam-vit-b/l/h); "
                                            "default: RAT_SAM_CHECKPOINT or the weights dir."),
    points_per_side: int = typer.Option(None, "--points-per-side",
                                        help="SAM prompt grid (default 32)."),
    task: str = typer.Option("auto", "--task",
                             help="Normalisation before partitioning, as `rat denoise` "
                                  "does (auto: by modality; ct, pet or none)."),
    device: str = typer.Option(None, "--device", help="Device for SAM (default: auto)."),
    tile: int = typer.Option(2048, "--tile", help="Larger slices (slides) are partitioned "
                                                  "in tiles of this edge."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the "
                                                            "region cache."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per input."),
) -> None:
    """Compute region label maps (SAM or the classical partitioner) for each input."""
    settings = {k: v for k, v in {"points_per_side": points_per_side, "device": device}.items()
                if v is not None}
    failed = 0
    with guard():
        partitioner = make_partitioner(method, sam_checkpoint=sam_checkpoint,
                                       cache=not no_cache, **settings)
        if partitioner.fallback:
            console.print(f"[yellow]warning:[/yellow] {partitioner.fallback}",
                          highlight=False, soft_wrap=True)
        for result in regions_many(inputs, output, partitioner=partitioner, overlay=overlay,
                                   task=task, tile=tile, overwrite=overwrite,
                                   raise_errors=state.debug):
            if as_json:
                emit_json(result.to_dict())
            elif result.status == "ok":
                lo, mid, hi = result.regions
                typer.echo(f"{result.output}  regions/slice {lo}-{hi} (median {mid})")
            if result.status == "error":
                failed += 1
                console.print(f"[red]error:[/red] {result.error}", highlight=False,
                              soft_wrap=True)
    if failed:
        raise typer.Exit(1)
