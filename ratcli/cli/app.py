"""The Typer app, the shared stderr console, and the one place RatError becomes an exit code.

Commands live in sibling modules (one per command group) and register on `app`.
They parse options, make one library call inside `guard()`, and report.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ratcli import __version__
from ratcli.errors import RatError

__all__ = ["app", "console", "guard", "progress", "emit_json", "state"]

app = typer.Typer(
    name="rat",
    help="Restore medical images with the Region Attention Transformer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


class _State:
    debug: bool = False


state = _State()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rat {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    state.debug = debug


@contextmanager
def guard() -> Iterator[None]:
    """Turn a RatError (or an unexpected crash) into one stderr line and an exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except RatError as exc:
        if state.debug:
            raise
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:
        if state.debug:
            raise
        console.print(
            f"[red]internal error:[/red] {exc.__class__.__name__}: {exc} (rerun with --debug)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def progress(disable: bool = False) -> Progress:
    """A rich progress bar on stderr, shown only when stderr is a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable or not console.is_terminal,
        transient=True,
    )


def emit_json(record: dict) -> None:
    """One JSON line on stdout (machine-readable output for pipelines)."""
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()
