"""Atomic outputs: write to a hidden temp path beside the target, rename on success.

A reader of the final path sees either nothing or a complete file (or folder); a crash,
an exception or a SIGKILL in the middle of writing leaves at most a hidden
`.rat-tmp-*` entry beside it, never a partial file at the final path. Such leftovers are
removed the next time rat writes into that folder (`remove_stale_temps`): the temp name
carries the writer's host and process id, so a temp of a process that is gone is
removed at once and one of a live process never is; a temp from another host (shared
file system) is removed once it is an hour older than the current run.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ratcli.errors import OutputExistsError, OutputNotWritableError, UsageError

__all__ = [
    "atomic_output",
    "check_not_input",
    "check_output_name",
    "is_temp_name",
    "remove_stale_temps",
    "TEMP_PREFIX",
]

TEMP_PREFIX = ".rat-tmp-"
# Longest addition to an output name: prefix, "old-", host.pid-token- and the ".raw.nii.gz"
# scratch file the NIfTI writer puts beside its temp.
_TEMP_OVERHEAD = len(TEMP_PREFIX) + len("old-") + len("abcdef.4194304-abcdef-") + len(".raw.nii.gz")
_OWNER = re.compile(r"(?:old-)?([0-9a-f]{6})\.(\d+)-")
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_RUN_STARTED = time.time()
_FOREIGN_STALE_S = 3600.0
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                           errno.EPERM, errno.EIO, errno.ENAMETOOLONG})
_cleaned: set[Path] = set()


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
    the right format. On any exception, KeyboardInterrupt included, the temp is removed,
    so are the folders this call created, and the final path is left as it was. A write
    error (disk full, quota, read-only) becomes one OutputNotWritableError line.
    """
    final = Path(path)
    check_output_name(final)
    check_not_input(final, inputs)
    if _exists(final) and not overwrite:
        raise OutputExistsError(f"{final}: output exists (use --overwrite to replace it)")
    parent = final.parent
    created = [d for d in (parent, *parent.parents) if not _exists(d)]
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(
            f"{final}: cannot create folder {parent}: {_why(exc)}"
        ) from None
    remove_stale_temps(parent)
    temp = parent / f"{TEMP_PREFIX}{_HOST}.{os.getpid()}-{secrets.token_hex(3)}-{final.name}"
    try:
        if directory:
            temp.mkdir()
        else:
            # Create it now so an unwritable folder fails here, before the work starts.
            temp.touch(exist_ok=False)
    except OSError as exc:
        _remove_empty(created)
        raise OutputNotWritableError(f"{final}: cannot write in {parent}: {_why(exc)}") from None
    try:
        yield temp
        _move_into_place(temp, final, overwrite=overwrite)
    except BaseException as exc:
        _remove(temp)
        _remove_empty(created)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise OutputNotWritableError(f"{final}: cannot write: {_why(exc)}") from None
        raise


def check_output_name(path: str | Path) -> None:
    """UsageError when `path`'s name, with the temp prefix rat adds while writing, is
    longer than its file system allows (checked before any work is done)."""
    final = Path(path)
    existing = next((d for d in (final.parent, *final.parent.parents) if d.is_dir()), Path("."))
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    length = len(os.fsencode(final.name))
    if length + _TEMP_OVERHEAD > name_max:
        raise UsageError(f"{final}: output name is too long ({length} bytes; at most "
                         f"{name_max - _TEMP_OVERHEAD} here, rat adds a temp prefix while "
                         "writing); choose a shorter name")


def is_temp_name(path: str | Path) -> bool:
    """True for rat's own temp entries (`.rat-tmp-*`), which are never inputs."""
    return Path(path).name.startswith(TEMP_PREFIX)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete `.rat-tmp-*` entries in `folder` left by a rat process that was killed:
    one of this host whose process is gone, or one of another host an hour older than
    this run. Once per folder per process; returns what was removed (best effort)."""
    folder = Path(folder)
    key = folder.resolve()
    if key in _cleaned:
        return []
    _cleaned.add(key)
    removed: list[Path] = []
    try:
        entries = [e for e in folder.iterdir() if is_temp_name(e)]
    except OSError:
        return removed
    for entry in entries:
        if _is_stale(entry):
            _remove(entry)
            if not _exists(entry):
                removed.append(entry)
    return removed


def _is_stale(entry: Path) -> bool:
    owner = _OWNER.match(entry.name[len(TEMP_PREFIX):])
    if owner and owner.group(1) == _HOST:
        return not _alive(int(owner.group(2)))
    try:
        mtime = entry.lstat().st_mtime
    except OSError:
        return False
    return mtime < _RUN_STARTED - _FOREIGN_STALE_S


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists (another user's), or not a pid we can judge
    return True


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this call created, deepest first, while they are empty."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            return


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
    aside = final.parent / (f"{TEMP_PREFIX}old-{_HOST}.{os.getpid()}-{secrets.token_hex(3)}-"
                            f"{final.name}")
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
