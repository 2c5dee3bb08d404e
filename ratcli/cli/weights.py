"""`rat weights list|verify|import|fetch`: the checkpoints rat knows and where they are."""

from __future__ import annotations

from pathlib import Path

import typer

from ratcli.cli.app import (
    TASK_NAMES,
    app,
    echo,
    emit_json,
    error_line,
    flag,
    get_console,
    guard,
    state,
)
from ratcli.cli.app import json_option as _json

weights_app = typer.Typer(
    help="List, verify, import and download checkpoints (RAT per task, SAM).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def list_weights(as_json: bool = _json("One JSON line each.")) -> None:
    """Every known checkpoint (bundled manifest, then your imports) and the file it
    loads from, or "missing"."""
    from ratcli.weights import find_weights, load_manifest

    with guard():
        for entry in load_manifest().values():
            path = find_weights(entry)
            if as_json:
                emit_json({"name": entry.name, "kind": entry.kind, "task": entry.task,
                           "origin": entry.origin, "file": entry.file,
                           "path": str(path) if path else None, "url": entry.url,
                           "sha256": entry.sha256, "description": entry.description})
            else:
                where = str(path) if path else "missing"
                echo(f"{entry.name:<18} {entry.kind:<4} {where}  {entry.description}")


@weights_app.command()
def verify(as_json: bool = _json("One JSON line each.")) -> None:
    """Re-hash every installed checkpoint against the manifest (exit 1 on a mismatch)."""
    with guard():
        from ratcli.weights_install import verify_weights

        statuses = verify_weights()
        for s in statuses:
            if as_json:
                emit_json({"name": s.name, "status": s.status,
                           "path": str(s.path) if s.path else None, "sha256": s.sha256})
            else:
                echo(f"{s.name:<18} {s.status:<10} {s.path or ''}")
    bad = [s.name for s in statuses if s.status == "mismatch"]
    if bad:
        error_line(f"checksum mismatch: {', '.join(bad)} (remove and fetch or import again)")
        raise typer.Exit(1)


@weights_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="Checkpoint file to copy into the weights dir.",
                                show_default=False),
    name: str = typer.Option(None, "--name", help="A known name (the file must match its "
                             "sha256), or a new name for your own RAT checkpoint (it must "
                             "load; recorded with its sha256 in RAT_HOME/manifest.json). "
                             "Default: found by sha256."),
    task: str = typer.Option(None, "--task", help="Task of your own checkpoint when its "
                             f"metadata names none ({', '.join(TASK_NAMES)})."),
    overwrite: bool = flag("--overwrite", "Replace an installed copy or an earlier import."),
    as_json: bool = _json("Print one JSON object."),
) -> None:
    """Install a checkpoint from a file (air-gapped machines, your own training runs):
    sha256 checked or recorded, atomic copy; then use it with --weights NAME."""
    state.activity = f"importing {file}"
    with guard():
        from ratcli.weights_install import import_weights

        entry, dest = import_weights(file, name=name, overwrite=overwrite, task=task)
    if as_json:
        emit_json({"name": entry.name, "path": str(dest), "task": entry.task,
                   "sha256": entry.sha256, "origin": entry.origin})
    else:
        echo(f"{entry.name}: {dest}")


@weights_app.command()
def fetch(
    name: str = typer.Argument(..., help="Manifest name, e.g. sam-vit-b (see `rat weights "
                               "list`).", show_default=False),
    url: str = typer.Option(None, "--url", help="Download from this mirror instead."),
    overwrite: bool = flag("--overwrite", "Download again if present."),
    timeout: float = typer.Option(30.0, "--timeout", help="Network timeout in seconds."),
    quiet: bool = flag("--quiet", "No progress bar.", "-q"),
) -> None:
    """Download a checkpoint: resumes a partial download, checks sha256, renames atomically.

    Exit codes: 1 checksum mismatch or unknown name, 3 network failure (run again to resume).
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from ratcli.weights_install import fetch_weights

    state.activity = f"downloading {name}"
    state.left = "the partial download is kept: run the command again to resume"
    console = get_console()
    bar = Progress(TextColumn(name), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn(), console=console, transient=True,
                   disable=quiet or not console.is_terminal, redirect_stdout=False,
                   redirect_stderr=False)
    task = bar.add_task(name, total=None)
    with guard(), bar:
        dest = fetch_weights(name, url=url, overwrite=overwrite, timeout=timeout,
                             progress=lambda done, total: bar.update(task, completed=done,
                                                                     total=total))
    echo(f"{name}: {dest}")
