"""The Typer app, stderr/stdout helpers, signals, and the one place RatError becomes an
exit code.

Commands live in sibling modules (one per command group) and register on `app`. They
parse options, make one library call inside `guard()`, and report. Nothing here (nor in
the command modules at import time) imports torch, numpy or rich: `rat --help`,
`rat --version` and usage errors return in a fraction of torch's import time.

Exit codes: 0 ok, 1 some input failed, 2 usage error, 3 download error, 128+N when
stopped by signal N (130 SIGINT, 129 SIGHUP, 143 SIGTERM, 141 when stdout is closed,
e.g. `| head`). On SIGINT, SIGTERM and SIGHUP the running step unwinds, so temp files
are removed and no partial output is left, and one line says what was interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

import typer

from ratcli import __version__
from ratcli.cli import coerce
from ratcli.errors import RatError
from ratcli.tasks import TASKS

__all__ = ["app", "console", "guard", "progress", "emit_json", "echo", "warn", "state",
           "note_line", "error_line", "result_line", "DeviceChoice", "TASK_NAMES", "flag",
           "device_option", "json_option", "quiet_option"]

# `--task` choices: the task table's names (ratcli.tasks imports no numpy at start-up)
TASK_NAMES = tuple(TASKS)
SIGPIPE_EXIT = 128 + 13
_HANDLED = ("SIGINT", "SIGTERM", "SIGHUP")
_RETRY_S = 0.05  # a stop signal that arrives during an import is raised again after this
coerce.install()


class DeviceChoice(StrEnum):
    """`--device` values, the same on every command."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class _State:
    debug: bool = False
    signum: int | None = None  # the first stop signal received
    activity: str = "starting"  # what a stop signal interrupts, for its one line
    left: str = "no partial output was left"  # and what it leaves behind


state = _State()


class _RatTyper(typer.Typer):
    """Typer whose entry call turns SIGINT/SIGTERM/SIGHUP into a clean unwind."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        install_signal_handlers()
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit:
            if state.signum is not None:
                _report_interrupt()
                raise SystemExit(128 + state.signum) from None
            raise
        except KeyboardInterrupt:  # before Typer's own handling took over
            _report_interrupt()
            raise SystemExit(128 + (state.signum or signal.SIGINT)) from None


app = _RatTyper(
    name="rat",
    help="Restore medical images with the Region Attention Transformer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # plain click help: no <bool> metavars on flags, and no rich import for --help
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP (schedulers, `timeout`, a closed terminal) unwind like Ctrl-C."""
    for name in _HANDLED:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _on_signal)


class StopSignal(KeyboardInterrupt):
    """What a stop signal raises: caught wherever KeyboardInterrupt is.

    Not KeyboardInterrupt itself: when one of those escapes code run by `exec(str)`
    (dataclasses and namedtuples are made that way, e.g. in a module imported lazily
    mid-run), CPython notes an "unhandled Ctrl-C" and kills the process with SIGINT at
    exit, whatever exit code rat chose. The note is made for that exact type only.
    """


def _on_signal(signum: int, frame: object) -> None:
    if state.signum is None:
        state.signum = signum
    if _importing(frame):
        # A module is being imported, maybe by a C extension's initialisation (torch's
        # runs Python through pybind11): an exception raised here can abort the process
        # (SIGABRT) or leave the module half made ("ImportError: initialization failed").
        # Ask again in a moment; imports are short and write nothing.
        retry = threading.Timer(_RETRY_S, _signal_main_thread, (signum,))
        retry.daemon = True
        retry.start()
        return
    raise StopSignal


def _signal_main_thread(signum: int) -> None:
    # to the main thread, so that a blocking call there (sleep, wait) is interrupted too
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident, signum)
    else:  # Windows
        signal.raise_signal(signum)


def _importing(frame: Any) -> bool:
    """True when the interrupted Python code runs inside an import."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _report_interrupt() -> None:
    name = signal.Signals(state.signum or signal.SIGINT).name
    sys.stderr.write(f"rat: interrupted by {name} while {state.activity}; {state.left}\n")
    sys.stderr.flush()


def _version(value: bool) -> None:
    if value:
        echo(f"rat {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    state.debug = debug


_console: Any = None


def get_console() -> Any:
    """rich's stderr Console, imported on first use (rich costs start-up time)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


class _LazyConsole:
    def __getattr__(self, name: str) -> Any:
        return getattr(get_console(), name)


console: Any = _LazyConsole()


def error_line(message: str) -> None:
    """One `error: ...` line on stderr."""
    note_line(f"error: {message}")


def warn(message: str) -> None:
    """One `warning: ...` line on stderr."""
    note_line(f"warning: {message}")


def note_line(text: str) -> None:
    """One line on stderr. Once rich is in use (a progress bar may be live), through its
    Console, which prints above the bar; before that, plain (no rich import)."""
    if _console is not None:
        _console.print(text, markup=False, highlight=False, soft_wrap=True)
        return
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


@contextmanager
def guard() -> Iterator[None]:
    """Turn a RatError (or an unexpected crash) into one stderr line and an exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except BrokenPipeError:
        _stdout_closed()
    except RatError as exc:
        if state.debug:
            raise
        error_line(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:
        if state.debug:
            raise
        error_line(f"internal error: {exc.__class__.__name__}: {exc} (rerun with --debug)")
        raise typer.Exit(1) from None


def _stdout_closed() -> None:
    """The reader of stdout went away (`| head -n1`): stop quietly, like other tools.

    stdout is pointed at /dev/null so the interpreter's final flush cannot fail again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise typer.Exit(SIGPIPE_EXIT)


def echo(text: str) -> None:
    """One line on stdout (results); a closed pipe ends the run quietly."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_closed()


def emit_json(record: dict) -> None:
    """One JSON line on stdout (machine-readable output for pipelines)."""
    echo(json.dumps(record, default=str))


def progress(disable: bool = False) -> Any:
    """A rich progress bar on stderr, shown only when stderr is a terminal.

    stdout is not redirected into the bar's console: results stay on stdout (see
    `result_line` for printing them above a live bar).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=get_console(),
        disable=disable or not get_console().is_terminal,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    )


def result_line(text: str, bar: Any = None) -> None:
    """A result on its own line: on stdout; when stdout is the terminal the bar is drawn
    on, printed through the bar so it lands above it instead of glued to its end."""
    if bar is not None and bar.live.is_started and sys.stdout.isatty():
        bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        echo(text)


def flag(name: str, help: str, *short: str) -> Any:
    """A boolean flag (off by default)."""
    return typer.Option(False, name, *short, help=help)


def device_option(what: str = "Compute device") -> Any:
    return typer.Option(DeviceChoice.AUTO, "--device",
                        help=f"{what}: auto (cuda, else mps, else cpu), cpu, cuda or mps.")


def json_option(what: str = "One JSON line per input on stdout.") -> Any:
    return flag("--json", what)


def quiet_option() -> Any:
    return flag("--quiet", "No progress, per-file lines or warnings; errors are still "
                "shown.", "-q")
