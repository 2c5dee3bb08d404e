"""`rat info`: versions and devices, for bug reports."""

from __future__ import annotations

import typer

from ratcli.cli.app import app, emit_json
from ratcli.info import environment_info


@app.command()
def info(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Show versions of rat, torch, SAM and OpenSlide, available devices and the weights dir."""
    data = environment_info()
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        typer.echo(f"{key:>18}: {value}")
