"""Known checkpoints: the manifest, the weights directories, and finding, importing,
fetching and verifying files.

The manifest (`weights/manifest.json` at the repository top, or the file named by
`RAT_MANIFEST`) lists every checkpoint rat knows by name: our RAT checkpoints per task
and the three official Segment Anything checkpoints. Files are looked up, in order, in
the repository's `weights/` directory and in the user weights directory (`RAT_HOME`,
default: the platform's user data dir). `fetch` and `import` write to the user directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ratcli.errors import CheckpointError, ChecksumError, OutputExistsError, WeightsNotFoundError
from ratcli.io.atomic import atomic_output

__all__ = [
    "WeightsEntry",
    "WeightsStatus",
    "default_weights_dir",
    "weights_dirs",
    "load_manifest",
    "resolve_weights",
    "find_weights",
    "find_sam_checkpoint",
    "import_weights",
    "fetch_weights",
    "verify_weights",
    "sha256_file",
]

REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
MANIFEST_FORMAT = "rat-weights-manifest/1"
# Preference when several SAM checkpoints are present: best masks first.
SAM_PREFERENCE = ("sam-vit-h", "sam-vit-l", "sam-vit-b")


@dataclass(frozen=True)
class WeightsEntry:
    """One manifest record.

    name: the name users type (`rat-ct`, `sam-vit-b`); file: file name inside a weights
    dir; kind: "rat" or "sam"; url: download address or None (not published);
    sha256: expected hex digest or None (unknown: the file cannot be verified);
    task: RAT task name; arch: SAM registry key (vit_b, vit_l, vit_h).
    """

    name: str
    file: str
    kind: str
    url: str | None = None
    sha256: str | None = None
    task: str | None = None
    arch: str | None = None
    description: str = ""


@dataclass(frozen=True)
class WeightsStatus:
    """Result of checking one manifest entry: status is "ok", "mismatch", "missing" or
    "unverified" (present, but the manifest has no checksum to compare with)."""

    name: str
    status: str
    path: Path | None
    sha256: str | None


def default_weights_dir() -> Path:
    """RAT_HOME, else the platform's user data dir (where fetch/import write)."""
    if home := os.environ.get("RAT_HOME"):
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("rat"))


def weights_dirs() -> list[Path]:
    """Directories searched for checkpoint files, in order."""
    return [REPO_WEIGHTS_DIR, default_weights_dir()]


def load_manifest(path: str | Path | None = None) -> dict[str, WeightsEntry]:
    """The manifest as {name: entry}; `path` (or RAT_MANIFEST) overrides the bundled one."""
    path = Path(path or os.environ.get("RAT_MANIFEST") or REPO_WEIGHTS_DIR / "manifest.json")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsNotFoundError(f"{path}: weights manifest not found") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable weights manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{path}: not a weights manifest (expected format {MANIFEST_FORMAT})")
    fields = set(WeightsEntry.__dataclass_fields__) - {"name"}
    try:
        return {
            name: WeightsEntry(name=name, **{k: v for k, v in rec.items() if k in fields})
            for name, rec in data["weights"].items()
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: malformed weights manifest ({exc})") from None


def resolve_weights(name_or_path: str | Path) -> Path:
    """An existing file path as is; else a manifest name found in the weights dirs.

    Raises WeightsNotFoundError with one line saying how to get the file.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    name = str(name_or_path)
    manifest = load_manifest()
    entry = manifest.get(name)
    if entry is None:
        if _looks_like_path(name):
            raise WeightsNotFoundError(f"{name}: weights file not found")
        raise WeightsNotFoundError(
            f"{name}: neither a file nor a known weights name "
            f"(known: {', '.join(manifest)}; see `rat weights list`)"
        )
    if (found := find_weights(entry)) is not None:
        return found
    where = ", ".join(str(d) for d in weights_dirs())
    how = (f"`rat weights fetch {name}`, " if entry.url else "") + (
        f"`rat weights import FILE --name {name}`, or pass --weights PATH"
    )
    raise WeightsNotFoundError(f"{name}: {entry.file} not found in {where}; get it with {how}")


def find_weights(entry: WeightsEntry) -> Path | None:
    """The first copy of `entry.file` in the weights dirs, or None."""
    for d in weights_dirs():
        if (p := d / entry.file).is_file():
            return p
    return None


def find_sam_checkpoint(explicit: str | Path | None = None) -> Path | None:
    """The SAM checkpoint to use: `explicit` (a path or manifest name), else
    RAT_SAM_CHECKPOINT, else the best sam-vit-* file present in the weights dirs."""
    chosen = explicit or os.environ.get("RAT_SAM_CHECKPOINT")
    if chosen:
        return resolve_weights(chosen)
    manifest = load_manifest()
    for name in SAM_PREFERENCE:
        if name in manifest and (p := find_weights(manifest[name])) is not None:
            return p
    return None


def import_weights(
    file: str | Path, *, name: str | None = None, overwrite: bool = False
) -> tuple[WeightsEntry, Path]:
    """Copy a checkpoint file into the user weights dir under its manifest name.

    Without `name` the file is identified by its sha256. With a name, the sha256 must
    match the manifest's; RAT checkpoints without a published sha256 must load as a rat
    checkpoint of the entry's task. Returns (entry, destination path).
    """
    src = Path(file).expanduser()
    if not src.is_file():
        raise WeightsNotFoundError(f"{src}: file to import not found")
    digest = sha256_file(src)
    manifest = load_manifest()
    entry = _identify(src, digest, manifest, name)
    dest = default_weights_dir() / entry.file
    if dest.is_file():
        if sha256_file(dest) == digest:
            return entry, dest
        if not overwrite:
            raise OutputExistsError(f"{dest}: a different {entry.name} is already installed "
                                    "(use --overwrite to replace it)")
    # copied under a temp name and renamed: never a half-written checkpoint in place
    with atomic_output(dest, overwrite=True, inputs=[src]) as tmp:
        shutil.copyfile(src, tmp)
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

    entry = _entry(load_manifest(), name)
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
    """Re-hash every manifest entry present in the weights dirs."""
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


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (streamed; checkpoints are up to 2.6 GB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _entry(manifest: dict[str, WeightsEntry], name: str) -> WeightsEntry:
    if name not in manifest:
        raise WeightsNotFoundError(f"{name}: not a known weights name "
                                   f"(known: {', '.join(manifest)})")
    return manifest[name]


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).suffix in {".pt", ".pth", ".ckpt"}


def _identify(
    src: Path, digest: str, manifest: dict[str, WeightsEntry], name: str | None
) -> WeightsEntry:
    """The manifest entry `src` is, or a ChecksumError/CheckpointError saying why not."""
    if name is None:
        for entry in manifest.values():
            if entry.sha256 == digest:
                return entry
        raise ChecksumError(f"{src}: sha256 {digest[:12]}... matches no known checkpoint; "
                            "give --name NAME to import a RAT checkpoint")
    entry = _entry(manifest, name)
    if entry.sha256 is not None:
        if digest != entry.sha256:
            raise ChecksumError(f"{src}: sha256 {digest[:12]}... is not {name}'s "
                                f"({entry.sha256[:12]}...); wrong or corrupted file")
        return entry
    if entry.kind == "rat":
        from ratcli.models.checkpoint import load_checkpoint

        task = load_checkpoint(src).meta.get("task")
        if entry.task and task not in (None, entry.task):
            raise CheckpointError(f"{src}: a checkpoint for task {task!r}, not {entry.task!r}")
    return entry
