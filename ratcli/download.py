"""Resumable, verified HTTP(S) download of one file (standard library only)."""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ratcli import __version__
from ratcli.checksum import sha256_file
from ratcli.errors import ChecksumError, DownloadError

__all__ = ["download"]

_CHUNK = 1 << 20


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download `url` to `dest`; returns `dest`.

    Bytes go to `<dest>.part`. If that file exists from an interrupted run, the request
    asks for the rest (`Range: bytes=N-`) and appends when the server answers 206; a
    server that ignores ranges (200) restarts the file. When complete, the sha256 is
    checked (a mismatch removes the partial file and raises ChecksumError) and the file
    is renamed to `dest` atomically. `progress(done_bytes, total_bytes_or_None)` is
    called after each chunk. Network failures raise DownloadError and keep the partial
    file, so running again resumes.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": f"rat/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as exc:
        # 416: the partial file already holds everything the server has
        if not (exc.code == 416 and have):
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect ({reason})") from None
    else:
        with response:
            _receive(url, response, part, have, progress)
    _verify(url, part, sha256)
    os.replace(part, dest)
    return dest


def _receive(
    url: str,
    response: http.client.HTTPResponse,
    part: Path,
    have: int,
    progress: Callable[[int, int | None], None] | None,
) -> None:
    """Append (206 from offset `have`) or rewrite (200) `part` from the response body."""
    if have and response.status == 206 and _range_start(response) == have:
        mode, done = "ab", have
    else:
        mode, done = "wb", 0
    length = response.headers.get("Content-Length")
    total = done + int(length) if length is not None else None
    with open(part, mode) as f:
        try:
            while block := response.read(_CHUNK):
                f.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"{url}: connection lost after {done} bytes "
                                f"({exc.__class__.__name__}); run again to resume") from None
    if total is not None and done < total:
        raise DownloadError(f"{url}: connection closed after {done} of {total} bytes; "
                            "run again to resume")


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """First byte offset of a 206 answer (`Content-Range: bytes START-END/TOTAL`)."""
    m = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _verify(url: str, part: Path, sha256: str | None) -> None:
    if sha256 is None:
        return
    digest = sha256_file(part)
    if digest != sha256:
        part.unlink()
        raise ChecksumError(f"{url}: downloaded file has sha256 {digest[:12]}..., expected "
                            f"{sha256[:12]}...; the partial file was removed")
