"""The one sha256 helper: hashing files, and remembering digests of unchanged files.

Checkpoints are verified at every load (up to 2.6 GB for SAM ViT-H, seconds to hash),
so a digest is remembered per (path, size, mtime, inode): in memory for this process
and in a small JSON file under the user weights dir for the next one. A file that was
rewritten, replaced or touched gets hashed again. Standard library only (no torch).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

__all__ = ["sha256_file", "cached_sha256", "CACHE_NAME"]

CACHE_NAME = ".sha256-cache.json"
_memory: dict[str, tuple[list[int], str]] = {}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, streamed."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cached_sha256(path: str | Path, cache_dir: Path | None = None) -> str:
    """sha256 of `path`, hashed only when its (size, mtime, inode) is not remembered.

    cache_dir: where the cross-process cache file lives (None: this process only). An
    unreadable or unwritable cache file is ignored: it only saves time.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    known = _memory.get(real)
    if known is None and cache_dir is not None:
        rec = _read(cache_dir).get(real)
        if isinstance(rec, dict) and isinstance(rec.get("sha256"), str):
            known = (rec.get("stamp"), rec["sha256"])
    if known is not None and known[0] == stamp:
        _memory[real] = known
        return known[1]
    digest = sha256_file(real)
    _memory[real] = (stamp, digest)
    if cache_dir is not None:
        _write(cache_dir, real, stamp, digest)
    return digest


def _read(cache_dir: Path) -> dict:
    try:
        data = json.loads((cache_dir / CACHE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(cache_dir: Path, real: str, stamp: list[int], digest: str) -> None:
    data = _read(cache_dir)
    data[real] = {"stamp": stamp, "sha256": digest}
    # drop records of files that are gone, so the cache does not grow for ever
    data = {k: v for k, v in data.items() if os.path.exists(k)}
    tmp = cache_dir / f".{CACHE_NAME}.{os.getpid()}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=0))
        os.replace(tmp, cache_dir / CACHE_NAME)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
