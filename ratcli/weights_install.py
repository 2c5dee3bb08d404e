"""Installing checkpoints: `rat weights import`, `fetch` and `verify`.

Files go to the user weights dir (`RAT_HOME`); a user's own checkpoint imported under a
new name is recorded with its sha256 in the user manifest there (see `ratcli.weights`
for the manifests and the search order).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ratcli.checksum import sha256_file
from ratcli.errors import (
    CheckpointError,
    ChecksumError,
    OutputExistsError,
    UsageError,
    WeightsNotFoundError,
)
from ratcli.weights import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    WeightsEntry,
    WeightsStatus,
    default_weights_dir,
    find_weights,
    get_entry,
    load_manifest,
)

__all__ = ["import_weights", "fetch_weights", "verify_weights"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

def import_weights(
    file: str | Path, *, name: str | None = None, overwrite: bool = False,
    task: str | None = None,
) -> tuple[WeightsEntry, Path]:
    """Copy a checkpoint into the user weights dir; returns (entry, destination).

    Without `name` the file is identified by its sha256. A known name needs the
    manifest's sha256 (or, for an unpublished RAT checkpoint, a checkpoint of its task).
    A new name takes the user's own RAT checkpoint: it must load, its task comes from
    its metadata (or `task`), and it is recorded with its sha256 in the user manifest.
    """
    src = Path(file).expanduser()
    if not src.is_file():
        raise WeightsNotFoundError(f"{src}: file to import not found")
    digest = sha256_file(src)
    manifest = load_manifest()
    known = manifest.get(name) if name is not None else None
    if name is not None and (known is None or known.origin == "user"):
        if known is not None and known.sha256 != digest and not overwrite:
            raise OutputExistsError(f"{name}: a different checkpoint is already imported "
                                    "under this name (use --overwrite to replace it)")
        entry = _new_user_entry(src, digest, name, task)
    else:
        entry = _identify(src, digest, manifest, name)
    dest = default_weights_dir() / entry.file
    same = dest.is_file() and sha256_file(dest) == digest
    if dest.is_file() and not same and not overwrite:
        raise OutputExistsError(f"{dest}: a different {entry.name} is already installed "
                                "(use --overwrite to replace it)")
    if not same:
        import shutil

        from ratcli.io.atomic import atomic_output

        # copied under a temp name and renamed: never a half-written checkpoint in place
        with atomic_output(dest, overwrite=True, inputs=[src]) as tmp:
            shutil.copyfile(src, tmp)
    if entry.origin == "user":
        _record_user_entry(entry)
    return entry, dest


def fetch_weights(
    name: str,
    *,
    url: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download a manifest entry into the user weights dir; returns its path.

    Resumes a previous partial download (`<file>.part`), checks the sha256 and renames
    atomically. `url` replaces the manifest's address (a mirror). `progress(done, total)`
    is called with byte counts.
    """
    from ratcli.download import download

    entry = get_entry(load_manifest(), name)
    source = url or entry.url
    if not source:
        raise WeightsNotFoundError(f"{name}: no download address is published; "
                                   f"use `rat weights import FILE --name {name}`")
    dest = default_weights_dir() / entry.file
    if dest.is_file() and not overwrite:
        if entry.sha256 is None or sha256_file(dest) == entry.sha256:
            return dest
        raise OutputExistsError(f"{dest}: exists but fails its checksum "
                                "(use --overwrite to fetch it again)")
    download(source, dest, sha256=entry.sha256, progress=progress, timeout=timeout)
    return dest


def verify_weights() -> list[WeightsStatus]:
    """Re-hash every manifest entry present in the weights dirs (no cache)."""
    out = []
    for entry in load_manifest().values():
        path = find_weights(entry)
        if path is None:
            out.append(WeightsStatus(entry.name, "missing", None, None))
            continue
        digest = sha256_file(path)
        if entry.sha256 is None:
            status = "unverified"
        else:
            status = "ok" if digest == entry.sha256 else "mismatch"
        out.append(WeightsStatus(entry.name, status, path, digest))
    return out


def _checkpoint_task(src: Path) -> str | None:
    """The task a RAT checkpoint names (CheckpointError when it does not load)."""
    from ratcli.models.checkpoint import load_checkpoint

    return load_checkpoint(src).meta.get("task")


def _identify(
    src: Path, digest: str, manifest: dict[str, WeightsEntry], name: str | None
) -> WeightsEntry:
    """The manifest entry `src` is, or a ChecksumError/CheckpointError saying why not."""
    if name is None:
        for entry in manifest.values():
            if entry.sha256 == digest:
                return entry
        raise ChecksumError(f"{src}: sha256 {digest[:12]}... matches no known checkpoint; "
                            "give --name NAME to import your own RAT checkpoint")
    entry = get_entry(manifest, name)
    if entry.sha256 is not None:
        if digest != entry.sha256:
            raise ChecksumError(f"{src}: sha256 {digest[:12]}... is not {name}'s "
                                f"({entry.sha256[:12]}...); wrong or corrupted file "
                                "(a new --name imports your own checkpoint)")
        return entry
    if entry.kind == "rat":
        task = _checkpoint_task(src)
        if entry.task and task not in (None, entry.task):
            raise CheckpointError(f"{src}: a checkpoint for task {task!r}, not {entry.task!r}")
    return entry


def _new_user_entry(src: Path, digest: str, name: str, task: str | None) -> WeightsEntry:
    """A user manifest entry for the user's own RAT checkpoint `src`."""
    if not _NAME.fullmatch(name) or name.endswith((".pt", ".pth")):
        raise UsageError(f"--name {name}: use letters, digits, '.', '_' and '-' "
                         "(up to 64, no file suffix)")
    from ratcli.tasks import TASKS

    found = _checkpoint_task(src)
    if task is not None and found not in (None, task):
        raise CheckpointError(f"{src}: a checkpoint for task {found!r}, not {task!r}")
    task = task or found
    if task not in TASKS:
        raise CheckpointError(f"{src}: the checkpoint names no task; pass --task "
                              f"({', '.join(TASKS)})")
    return WeightsEntry(name=name, file=f"{name}.pt", kind="rat", sha256=digest, task=task,
                        description=f"imported from {src.resolve()}", origin="user")


def _record_user_entry(entry: WeightsEntry) -> None:
    """Add or replace `entry` in RAT_HOME/manifest.json (temp file + rename)."""
    path = default_weights_dir() / MANIFEST_NAME
    data = {"format": MANIFEST_FORMAT, "weights": {}}
    if path.is_file():
        data = json.loads(path.read_text())
    rec = {k: v for k, v in asdict(entry).items() if k not in ("name", "origin")}
    data["weights"][entry.name] = rec
    tmp = path.with_name(f".{MANIFEST_NAME}.{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
