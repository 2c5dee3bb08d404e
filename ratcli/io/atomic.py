"""Atomic outputs: write to a hidden temp path beside the target, rename on success.

A reader of the final path sees either nothing or a complete file (or folder); a crash,
an exception or a SIGKILL in the middle of writing leaves at most a hidden
`.rat-tmp-*` entry beside it, never a partial file at the final path.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ratcli.errors import OutputExistsError, OutputNotWritableError, UsageError

__all__ = ["atomic_output", "check_not_input", "TEMP_PREFIX"]

TEMP_PREFIX = ".rat-tmp-"


@contextmanager
def atomic_output(
    path: str | Path,
    *,
    overwrite: bool = False,
    directory: bool = False,
    inputs: Iterable[str | Path] = (),
) -> Iterator[Path]:
    """Yield a temp path in the same folder as `path`; move it to `path` on success.

    path: the final output (a file, or a folder when `directory`).
    overwrite: replace an existing output; otherwise OutputExistsError before any work.
    directory: yield an empty temp folder (created) instead of a file path (not created).
    inputs: paths the output must not equal, lie inside, or (with overwrite) contain;
        UsageError otherwise, so an input is never overwritten.
    The temp name ends with the final name, so suffix-based writers (.nii.gz, .tif) pick
    the right format. On any exception, KeyboardInterrupt included, the temp is removed
    and the final path is left as it was.
    """
    final = Path(path)
    check_not_input(final, inputs)
    if _exists(final) and not overwrite:
        raise OutputExistsError(f"{final}: output exists (use --overwrite to replace it)")
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(
            f"{final}: cannot create folder {parent}: {_why(exc)}"
        ) from None
    temp = parent / f"{TEMP_PREFIX}{secrets.token_hex(4)}-{final.name}"
    try:
        if directory:
            temp.mkdir()
        else:
            # Create it now so an unwritable folder fails here, before the work starts.
            temp.touch(exist_ok=False)
    except OSError as exc:
        raise OutputNotWritableError(f"{final}: cannot write in {parent}: {_why(exc)}") from None
    try:
        yield temp
        _move_into_place(temp, final, overwrite=overwrite)
    except BaseException:
        _remove(temp)
        raise


def check_not_input(final: Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is an input, sits inside an input folder, or holds an input."""
    out = final.resolve()
    for item in inputs:
        src = Path(item).resolve()
        if out == src or src in out.parents:
            raise UsageError(f"{final}: output would overwrite or sit inside input {item}")
        if out in src.parents:
            raise UsageError(f"{final}: output folder contains input {item}")


def _exists(p: Path) -> bool:
    return p.exists() or p.is_symlink()


def _move_into_place(temp: Path, final: Path, *, overwrite: bool) -> None:
    """os.replace temp -> final. A folder (or a type change) cannot be replaced in one
    call, so the old output is first renamed aside and deleted only after the swap."""
    if not _exists(final):
        os.replace(temp, final)
        return
    if not overwrite:
        # Someone created it while we were writing.
        raise OutputExistsError(f"{final}: output appeared while writing (use --overwrite)")
    if final.is_file() and temp.is_file():
        os.replace(temp, final)
        return
    aside = final.parent / f"{TEMP_PREFIX}old-{secrets.token_hex(4)}-{final.name}"
    os.replace(final, aside)
    try:
        os.replace(temp, final)
    except BaseException:
        os.replace(aside, final)
        raise
    _remove(aside)


def _remove(p: Path) -> None:
    """Best-effort delete of a file or folder (used only on our own temp entries)."""
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    except OSError:
        pass


def _why(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__
