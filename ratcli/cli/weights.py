"""`rat weights list|verify|import|fetch`: the checkpoints rat knows and where they are."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ratcli.cli.app import app, console, emit_json, guard
from ratcli.weights import (
    fetch_weights,
    find_weights,
    import_weights,
    load_manifest,
    verify_weights,
)

weights_app = typer.Typer(
    help="List, verify, import and download checkpoints (RAT per task, SAM).",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def list_weights(as_json: bool = typer.Option(False, "--json", help="One JSON line each.")) -> None:
    """Every checkpoint in the manifest, and where it is installed (or "missing")."""
    with guard():
        manifest = load_manifest()
        for entry in manifest.values():
            path = find_weights(entry)
            if as_json:
                emit_json({"name": entry.name, "kind": entry.kind, "file": entry.file,
                           "path": str(path) if path else None, "url": entry.url,
                           "sha256": entry.sha256, "description": entry.description})
            else:
                where = str(path) if path else "missing"
                typer.echo(f"{entry.name:<10} {entry.kind:<4} {where}  {entry.description}")


@weights_app.command()
def verify(as_json: bool = typer.Option(False, "--json", help="One JSON line each.")) -> None:
    """Re-hash every installed checkpoint against the manifest (exit 1 on a mismatch)."""
    with guard():
        statuses = verify_weights()
    for s in statuses:
        if as_json:
            emit_json({"name": s.name, "status": s.status,
                       "path": str(s.path) if s.path else None, "sha256": s.sha256})
        else:
            typer.echo(f"{s.name:<10} {s.status:<10} {s.path or ''}")
    bad = [s.name for s in statuses if s.status == "mismatch"]
    if bad:
        console.print(f"[red]error:[/red] checksum mismatch: {', '.join(bad)} "
                      "(remove and fetch or import again)", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@weights_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="Checkpoint file to copy into the weights dir."),
    name: str = typer.Option(None, "--name", help="Manifest name (default: found by sha256)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an installed copy."),
) -> None:
    """Install a checkpoint from a file (air-gapped machines): sha256 checked, atomic copy."""
    with guard():
        entry, dest = import_weights(file, name=name, overwrite=overwrite)
    typer.echo(f"{entry.name}: {dest}")


@weights_app.command()
def fetch(
    name: str = typer.Argument(..., help="Manifest name, e.g. sam-vit-b (see `rat weights list`)."),
    url: str = typer.Option(None, "--url", help="Download from this mirror instead."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Download again if present."),
    timeout: float = typer.Option(30.0, "--timeout", help="Network timeout in seconds."),
) -> None:
    """Download a checkpoint: resumes a partial download, checks sha256, renames atomically.

    Exit codes: 1 checksum mismatch or unknown name, 3 network failure (run again to resume).
    """
    bar = Progress(TextColumn(name), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn(), console=console, transient=True,
                   disable=not console.is_terminal)
    task = bar.add_task(name, total=None)
    with guard(), bar:
        dest = fetch_weights(name, url=url, overwrite=overwrite, timeout=timeout,
                             progress=lambda done, total: bar.update(task, completed=done,
                                                                     total=total))
    typer.echo(f"{name}: {dest}")
