"""`python -m ratcli` and the `rat` command (pyproject's console script)."""

from __future__ import annotations

import os
import signal

_STOP = ("SIGINT", "SIGTERM", "SIGHUP")


def _stopped_while_starting(signum: int, frame: object) -> None:
    # Imports are still running and nothing has been written: one line, no traceback.
    name = signal.Signals(signum).name
    os.write(2, f"rat: interrupted by {name} while starting; nothing was written\n".encode())
    os._exit(128 + signum)


def main() -> None:
    for name in _STOP:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _stopped_while_starting)
    from ratcli.cli import app

    app(prog_name="rat")  # installs handlers that unwind (temp files removed) instead


if __name__ == "__main__":
    main()
